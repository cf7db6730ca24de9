"""Native request bodies for the gateway benchmarks: every event id unique within a run.

A `Bodies` builds `POST /v1/events` JSON bodies as the SDK sends them (`type`, a UUID
`event_id`, `event`, `distinct_id`, an ISO `timestamp` and ~200 bytes of properties).
The events come from 1,000 prepared templates (five event names, 2,000 users); a body
only fills in ids and the time, so the load generator spends ~0.4 µs per event on it.

Ids are `<random 74-bit run prefix>-<12-hex counter>` in the UUIDv4 layout (version 4,
RFC 4122 variant): unique within a run and across runs, never a duplicate by accident.
"""

from __future__ import annotations

import random
import secrets
from datetime import UTC, datetime, timedelta

import msgspec

EVENT_NAMES = ("page_view", "add_to_cart", "checkout_started", "order_completed", "search")
TEMPLATES = 1_000
USERS = 2_000
LIB = "headwater-bench/0.1.0"


def _properties(rng: random.Random, n: int) -> dict[str, object]:
    """About 200 bytes of JSON: what a product event carries."""
    return {
        "order_id": f"o_{n:07d}",
        "revenue_cents": rng.randrange(100, 50_000),
        "currency": rng.choice(("USD", "EUR", "GBP")),
        "items": rng.randrange(1, 9),
        "coupon": rng.choice(("SPRING10", "WELCOME", "")),
        "page": f"/products/sku-{rng.randrange(10_000):05d}",
        "referrer": f"https://www.example.com/search?q=item{rng.randrange(1000)}",
        "plan": rng.choice(("free", "pro", "team")),
        "ab_group": rng.choice(("control", "variant_a")),
    }


def _template(rng: random.Random, n: int) -> bytes:
    """One event with `%s` slots for the run prefix, `%012x` for the counter, `%s` for time."""
    event = {
        "type": "track",
        "event_id": "@ID@",
        "event": rng.choice(EVENT_NAMES),
        "distinct_id": f"u_{rng.randrange(USERS):05d}",
        "timestamp": "@TS@",
        "properties": _properties(rng, n),
    }
    encoded = msgspec.json.encode(event).replace(b"%", b"%%")
    return encoded.replace(b"@ID@", b"%s-%012x").replace(b"@TS@", b"%s")


def run_prefix() -> bytes:
    """The random first 20 hex digits of this run's ids, in UUIDv4 layout."""
    raw = secrets.token_hex(10)
    variant = "89ab"[int(raw[16], 16) % 4]
    return f"{raw[:8]}-{raw[8:12]}-4{raw[13:16]}-{variant}{raw[17:20]}".encode()


class Bodies:
    """Makes native batch bodies with fresh event ids; `events` counts the ids handed out."""

    def __init__(self, *, seed: int = 7, prefix: bytes | None = None, wrap: int = 0) -> None:
        """`prefix` and `wrap` repeat another run's ids: with the `prefix` of a `Bodies`
        that handed out `wrap` ids, every id is one of those (duplicates on purpose)."""
        rng = random.Random(seed)
        self._templates = [_template(rng, n) for n in range(TEMPLATES)]
        self.prefix = prefix or run_prefix()
        self._wrap = wrap or 1 << 48
        self.events = 0

    def body(self, size: int) -> bytes:
        """A JSON body of `size` events, ids never handed out before."""
        start = self.events
        self.events += size
        now = datetime.now(UTC)
        # Microseconds, as the SDK's encoder writes them; the events a little older than
        # the body (queued before it was sent), so corrected times keep sub-ms digits.
        sent = msgspec.json.encode(now)[1:-1]
        stamp = msgspec.json.encode(now - timedelta(microseconds=250_123))[1:-1]
        templates, prefix, count = self._templates, self.prefix, len(self._templates)
        ids = [n % self._wrap for n in range(start, start + size)]
        events = [templates[n % count] % (prefix, n, stamp) for n in ids]
        return b'{"sent_at":"%s","lib":"%s","batch":[%s]}' % (
            sent,
            LIB.encode(),
            b",".join(events),
        )


def sample_bodies(count: int, size: int, *, seed: int = 7) -> list[bytes]:
    """`count` bodies of `size` events each (for the stage measurements)."""
    bodies = Bodies(seed=seed)
    return [bodies.body(size) for _ in range(count)]
