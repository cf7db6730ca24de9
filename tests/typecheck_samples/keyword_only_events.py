"""An Event is keyword-only (headwater/sdk/_event.py): positional properties are a mistake.

Only type-checked (by tests/sdk/test_typecheck.py), never run.
"""

from headwater.sdk import Event


class OrderCompleted(Event, name="order_completed"):
    order_id: str
    revenue_cents: int


positional = OrderCompleted("o1", 1299)  # expect: call-arg
by_keyword = OrderCompleted(order_id="o1", revenue_cents=1299)
