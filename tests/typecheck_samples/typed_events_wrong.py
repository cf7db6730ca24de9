"""Mistakes a type checker must catch: each `# expect:` names the mypy error code on its line.

Only type-checked (by tests/sdk/test_typecheck.py), never run.
"""

from headwater.sdk import AsyncClient, Client, Event


class OrderCompleted(Event, name="order_completed"):
    order_id: str
    revenue_cents: int
    coupon: str | None = None


def emit(hw: Client) -> None:
    # A property of the wrong type.
    wrong_type = OrderCompleted(order_id="o1", revenue_cents="12.99")  # expect: arg-type
    # A required property left out.
    missing = OrderCompleted(order_id="o1")  # expect: call-arg
    # A property the event does not declare.
    unknown = OrderCompleted(order_id="o1", revenue_cents=1, discount=5)  # expect: call-arg
    # An optional property still has a type.
    bad_optional = OrderCompleted(order_id="o1", revenue_cents=1, coupon=10)  # expect: arg-type
    # A plain dict is not a typed event: untyped events go through capture().
    hw.track({"order_id": "o1", "revenue_cents": 1}, distinct_id="u")  # expect: arg-type
    # The class instead of an instance.
    hw.track(OrderCompleted, distinct_id="u")  # expect: arg-type
    # distinct_id is required and keyword-only.
    order = OrderCompleted(order_id="o1", revenue_cents=1)
    hw.track(order)  # expect: call-arg
    hw.track(order, "u")  # expect: call-arg
    # capture() takes an event name, not a typed event.
    hw.capture(order, distinct_id="u")  # expect: arg-type
    # The id is None when the event was not accepted.
    event_id: str = hw.track(order, distinct_id="u")  # expect: assignment
    print(wrong_type, missing, unknown, bad_optional, event_id)


async def emit_async(hw: AsyncClient) -> None:
    hw.track({"order_id": "o1"}, distinct_id="u")  # expect: arg-type
    hw.flush()  # expect: unused-coroutine
