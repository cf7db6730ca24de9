"""Typed events the SDK tests emit (also a module for `headwater schema export`)."""

from __future__ import annotations

import enum
from datetime import date
from decimal import Decimal

from headwater.sdk import Event


class Plan(enum.Enum):
    FREE = "free"
    PRO = "pro"


class OrderCompleted(Event, name="order_completed"):
    order_id: str
    revenue_cents: int
    coupon: str | None = None


class PlanChanged(Event):
    plan: Plan
    price: Decimal
    effective: date
