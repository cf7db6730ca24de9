"""`headwater demo` while only the SDK exists: a synthetic shop's events, delivered for real.

The events go through a `Client` to a loopback HTTP receiver that speaks the native
protocol; the summary shows what crossed the wire. The gateway and modeler replace the
receiver with ClickHouse and the marts.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.table import Table

from ._client import Client
from ._event import Event
from ._options import ClientOptions
from .testing import LoopbackReceiver


class PageViewed(Event, name="page_view"):
    path: str


class AddedToCart(Event, name="add_to_cart"):
    sku: str
    items_count: int


class CheckoutStarted(Event, name="checkout_started"):
    items_count: int


class OrderCompleted(Event, name="order_completed"):
    order_id: str
    revenue_cents: int
    items_count: int


def _emit_user(hw: Client, rng: random.Random, user: str, start: datetime) -> None:
    plan = rng.choice(["free", "free", "pro", "team"])
    hw.identify(user, {"email": f"{user}@example.com", "plan": plan}, timestamp=start)
    when = start
    for _ in range(rng.randint(1, 12)):
        when += timedelta(minutes=rng.randint(1, 600))
        hw.track(
            PageViewed(path=rng.choice(["/", "/pricing", "/shop"])),
            distinct_id=user,
            timestamp=when,
        )
        if rng.random() < 0.4:
            items = rng.randint(1, 4)
            hw.track(
                AddedToCart(sku=f"sku-{rng.randint(1, 50)}", items_count=items),
                distinct_id=user,
                timestamp=when,
            )
            if rng.random() < 0.6:
                hw.track(CheckoutStarted(items_count=items), distinct_id=user, timestamp=when)
                if rng.random() < 0.7:
                    order = OrderCompleted(
                        order_id=f"o-{user}-{when:%j%H%M}",
                        revenue_cents=items * rng.randint(500, 5000),
                        items_count=items,
                    )
                    hw.track(order, distinct_id=user, timestamp=when)


def run_demo(*, users: int, days: int, seed: int, console: Console) -> None:
    """Emit the synthetic shop's events and print what the receiver got."""
    rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data
    first_day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=days
    )
    started = time.perf_counter()
    with LoopbackReceiver() as receiver:
        hw = Client("demo-write-key", host=receiver.url, options=ClientOptions(flush_interval=0.2))
        for n in range(users):
            _emit_user(hw, rng, f"u_{n:05d}", first_day + timedelta(days=rng.randrange(days)))
        hw.shutdown(timeout=30)
        stats = hw.stats()
        messages = receiver.messages
        wire = sum(len(body) for _, _, body in receiver.requests)
    elapsed = time.perf_counter() - started
    table = Table(title="Events the receiver stored")
    table.add_column("event")
    table.add_column("events", justify="right")
    table.add_column("users", justify="right")
    users_by_event: dict[str, set[str]] = {}
    for message in messages:
        users_by_event.setdefault(message.event, set()).add(message.distinct_id)
    for name, count in Counter(m.event for m in messages).most_common():
        table.add_row(name, str(count), str(len(users_by_event[name])))
    console.print(table)
    console.print(
        f"{stats.sent} events sent in {len(receiver.batches)} gzip batches, "
        f"{wire / 1024:.0f} KiB on the wire, {stats.dropped} dropped, {elapsed:.2f}s"
    )
