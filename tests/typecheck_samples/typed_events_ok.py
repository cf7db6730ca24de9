"""Typed events used as the README shows: `mypy --strict` finds nothing to report here.

Only type-checked (by tests/sdk/test_typecheck.py), never run.
"""

from datetime import UTC, datetime
from typing import assert_type

from headwater.sdk import AsyncClient, Client, Event, event_name


class OrderCompleted(Event, name="order_completed"):
    order_id: str
    revenue_cents: int
    coupon: str | None = None


class SignedUp(Event):  # no name=: the wire name is the class name in snake case
    plan: str


def emit(hw: Client) -> list[str | None]:
    order = OrderCompleted(order_id="o1", revenue_cents=1299)
    with_coupon = OrderCompleted(order_id="o2", revenue_cents=500, coupon="WELCOME")
    assert_type(order.revenue_cents, int)
    assert_type(with_coupon.coupon, str | None)
    return [
        hw.track(order, distinct_id="u_42"),
        hw.track(with_coupon, distinct_id="u_42", timestamp=datetime.now(UTC), event_id="e-1"),
        hw.track(SignedUp(plan="free"), distinct_id="u_43"),
        hw.capture("page_view", distinct_id="u_42", properties={"path": "/"}),
        hw.identify("u_42", {"email": "a@b.c"}, set_once={"first_seen": "2026-01-01"}),
        hw.alias("anon-7f3a", "u_42"),
    ]


async def emit_async(hw: AsyncClient) -> bool:
    assert_type(hw.track(SignedUp(plan="pro"), distinct_id="u_44"), str | None)
    flushed = await hw.flush(timeout=5)
    return flushed and await hw.shutdown()


names: list[str] = [event_name(OrderCompleted), event_name(SignedUp(plan="free"))]
