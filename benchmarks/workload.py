"""The event every benchmark sends: the README's `OrderCompleted`, as a typed event and as
the equivalent dict, so that each contestant gets exactly the same properties."""

from __future__ import annotations

from typing import Any

from headwater.sdk import Event


class OrderCompleted(Event, name="order_completed"):
    order_id: str
    revenue_cents: int
    coupon: str | None = None


EVENT_NAME = "order_completed"
DISTINCT_ID = "u_42"
ORDER = OrderCompleted(order_id="o_1001", revenue_cents=1299, coupon="SPRING10")
PROPERTIES: dict[str, Any] = {"order_id": "o_1001", "revenue_cents": 1299, "coupon": "SPRING10"}
# The same order without a coupon: an optional property left at None, as in the README.
ORDER_WITHOUT_COUPON = OrderCompleted(order_id="o_1001", revenue_cents=1299)


def orders(count: int) -> list[tuple[OrderCompleted, str]]:
    """`count` distinct orders from 2,000 users, built ahead so that no timing includes them."""
    return [
        (
            OrderCompleted(order_id=f"o_{i}", revenue_cents=100 + i % 5000, coupon="SPRING10"),
            f"u_{i % 2000}",
        )
        for i in range(count)
    ]
