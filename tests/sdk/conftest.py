"""The real gateway for the SDK's tests: the gateway tests' own fixtures, used as they are."""

from __future__ import annotations

from tests.gateway.conftest import gateway, start_gateway

__all__ = ["gateway", "start_gateway"]
