"""A seeded synthetic product: a small shop's event stream, for `headwater demo` and the tests.

`generate()` simulates users who sign up over the period (an `$identify` whose `$set`
holds email, name, plan and signed_up_at), come back in sessions with a weekly rhythm
(fewer visits at weekends, more in the UTC afternoon), view pages, use features
(`duration_seconds`), walk the purchase funnel page_view → add_to_cart (`items_count`) →
checkout_started → order_completed (`revenue_cents`, `items_count`) with drop-off at each
step and, now and then, hours or days between steps, change plan mid-period (a later
`$identify`, carrying either every trait or only the plan), re-identify with unchanged
traits, and churn (some never return, the rest stop with a per-day hazard).

Edge cases are opt-in, so that tests can ask for exactly what they check:

- `duplicates`: that fraction of events is repeated (same event_id, equal copy);
- `late`: that fraction of events arrives late: `late_by` (26 h to 7 days) tells a caller who
  replays the stream in arrival order (`arrives_at`) when to send each event;
- `midnight_pairs`: pairs of page_views by one user at 23:59:59.999 and, the next day,
  00:00:00.000 UTC;
- `tied_events`: page_views at the very timestamp of one of the same user's later funnel
  steps (the case where ClickHouse's windowFunnel undercounts);
- `empty_days`: days of the period on which nothing at all happens.

Empty days shape the simulation; the other edge cases are drawn after it, so asking for
one leaves every other event as it was (midnight pairs and ties are page_views added on
top). Everything is drawn from one `random.Random(seed)`: equal arguments give equal
events, event ids included (UUIDv7 text built from the timestamp and the seeded generator).
Standard library only; 2,000 users over 60 days (about 48,000 events) take about 0.3 s.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from typing import Any, TypeVar

__all__ = ["PURCHASE_FUNNEL", "SyntheticEvent", "generate"]

PURCHASE_FUNNEL = ("page_view", "add_to_cart", "checkout_started", "order_completed")
"""The funnel the synthetic shop is built around (DESIGN.md's default `purchase` funnel)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND_MS = 1_000
_MINUTE_MS = 60_000
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000

# Share of sessions starting in each UTC hour: quiet nights, busy afternoons.
_HOUR_CUM_WEIGHTS = list(
    accumulate((2, 1, 1, 1, 1, 2, 3, 5, 7, 8, 9, 9, 10, 10, 10, 10, 10, 10, 9, 8, 7, 6, 4, 3))
)
_WEEKDAY_FACTOR = (1.0, 1.0, 1.0, 1.0, 0.9, 0.6, 0.55)  # Monday .. Sunday
_PLANS = ("free", "pro", "team")
_PLAN_CUM_WEIGHTS = (70, 95, 100)
_PLAN_CHANGE = {"free": ("pro", "pro", "pro", "team"), "pro": ("free", "team"), "team": ("pro",)}
_PATHS = ("/", "/pricing", "/shop", "/shop/new", "/blog", "/docs", "/account", "/cart")
_ACTIONS = (("search", 5, 90), ("feature_used", 10, 600), ("video_watched", 30, 1_800))
_PRICES_CENTS = (499, 999, 1_499, 2_499, 4_999)
_FIRST_NAMES = ("Ada", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kai")
_LAST_NAMES = ("Ito", "Jones", "Kaur", "Lopez", "Mills", "Novak", "Okafor", "Park", "Quinn")

_NEVER_RETURN = 0.3  # share of users whose signup session is their only one
_CHECKOUT_RATE = 0.55  # add_to_cart → checkout_started
_ORDER_RATE = 0.7  # checkout_started → order_completed
_LONG_GAP_RATE = 0.12  # a funnel step that comes 6 to 40 hours after the previous one
_REIDENTIFY_RATE = 0.03  # a visit that starts with an identify repeating the traits
_FUNNEL_STEPS = frozenset(PURCHASE_FUNNEL[1:])
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SyntheticEvent:
    """One event of the synthetic stream, shaped like a row of the `events` table."""

    event_id: str
    event: str
    distinct_id: str
    timestamp: datetime
    properties: dict[str, Any]
    late_by: timedelta = field(default=timedelta(0))
    """How long after `timestamp` the event reaches the pipeline (zero unless late)."""

    @property
    def arrives_at(self) -> datetime:
        """When a replay in arrival order should send the event."""
        return self.timestamp + self.late_by


# (ms since the epoch, event_id, event, distinct_id, properties)
_Record = tuple[int, str, str, str, dict[str, Any]]


@dataclass(slots=True)
class _Profile:
    """One user's traits and habits, drawn at signup."""

    user_id: str
    traits: dict[str, str]
    visit: float  # chance of a visit on an ordinary weekday
    churn: float  # chance per day of never coming back
    buy: float  # chance per session of adding to the cart
    plan_changes: int


def generate(
    *,
    users: int,
    days: int,
    seed: int,
    end: date,
    duplicates: float = 0.0,
    late: float = 0.0,
    midnight_pairs: int = 0,
    tied_events: int = 0,
    empty_days: Collection[date] = (),
) -> list[SyntheticEvent]:
    """The events of `users` users over the `days` days ending on `end` (UTC), by timestamp.

    The edge-case options are described in the module docstring. Events with equal
    timestamps keep the order in which they were generated (a repeat comes after its
    original). Raises
    ValueError for arguments out of range, or when the stream has fewer candidates than
    `midnight_pairs` or `tied_events` ask for.
    """
    _check(users=users, days=days, duplicates=duplicates, late=late)
    start = end - timedelta(days=days - 1)
    empty = {(day - start).days for day in empty_days}
    if any(not 0 <= index < days for index in empty):
        raise ValueError(f"empty_days must lie between {start} and {end}")
    if len(empty) == days:
        raise ValueError("every day of the period is empty: there is nowhere to put events")
    rng = random.Random(seed)  # noqa: S311 - a reproducible simulation, not a secret
    shop = _Shop(rng, start=start, days=days, empty=empty)
    for number, signup_day in enumerate(shop.signup_days(users), start=1):
        shop.user(number, signup_day)
    shop.add_midnight_pairs(midnight_pairs)
    shop.add_tied_events(tied_events)
    return _events(shop.records, rng, duplicates=duplicates, late=late)


def _check(*, users: int, days: int, duplicates: float, late: float) -> None:
    if users < 1 or days < 1:
        raise ValueError("users and days must be at least 1")
    for name, fraction in (("duplicates", duplicates), ("late", late)):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{name} is a fraction of the events, between 0 and 1")


class _Shop:
    """The simulation: users, their sessions and what they do, as records."""

    def __init__(self, rng: random.Random, *, start: date, days: int, empty: set[int]) -> None:
        self.rng = rng
        self.start_ms = (start - _EPOCH.date()).days * _DAY_MS
        self.end_ms = self.start_ms + days * _DAY_MS
        self.start = start
        self.days = days
        self.empty = empty
        self.records: list[_Record] = []
        self.orders = 0

    def emit(self, ms: int, event: str, user_id: str, properties: dict[str, Any]) -> bool:
        """Record an event, unless it falls after the period or on an empty day."""
        if ms >= self.end_ms or (ms - self.start_ms) // _DAY_MS in self.empty:
            return False
        self.records.append((ms, _uuid7(ms, self.rng.getrandbits(74)), event, user_id, properties))
        return True

    def signup_days(self, users: int) -> list[int]:
        """Day indices of the signups: growing over the period, fewer at weekends."""
        open_days = [day for day in range(self.days) if day not in self.empty]
        weights = [
            (1.0 + day / self.days) * _WEEKDAY_FACTOR[self.weekday(day)] for day in open_days
        ]
        return sorted(self.rng.choices(open_days, cum_weights=list(accumulate(weights)), k=users))

    def weekday(self, day: int) -> int:
        return (self.start.weekday() + day) % 7

    def time_of_day(self) -> int:
        hour = self.rng.choices(range(24), cum_weights=_HOUR_CUM_WEIGHTS)[0]
        return hour * _HOUR_MS + self.rng.randrange(_HOUR_MS)

    def user(self, number: int, signup_day: int) -> None:
        """A user's whole life: signup, then visits until churn or the end of the period."""
        profile = self.profile(number, signup_day)
        signed_up_ms = self.start_ms + signup_day * _DAY_MS + self.time_of_day()
        profile.traits["signed_up_at"] = _iso(signed_up_ms)
        self.emit(signed_up_ms, "$identify", profile.user_id, {"$set": dict(profile.traits)})
        self.session(profile, signed_up_ms + self.rng.randint(_SECOND_MS, 30 * _SECOND_MS))
        if self.rng.random() < _NEVER_RETURN:
            return
        for day in range(signup_day + 1, self.days):
            if self.rng.random() < profile.churn:
                return
            if day in self.empty:
                continue
            if self.rng.random() < profile.visit * _WEEKDAY_FACTOR[self.weekday(day)]:
                self.visit(profile, day)
                if self.rng.random() < 0.2:  # a second session that day
                    self.visit(profile, day)

    def profile(self, number: int, signup_day: int) -> _Profile:
        rng = self.rng
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        plan = rng.choices(_PLANS, cum_weights=_PLAN_CUM_WEIGHTS)[0]
        traits = {
            "email": f"{first}.{last}.{number}@example.com".lower(),
            "name": f"{first} {last}",
            "plan": plan,
        }
        return _Profile(
            user_id=f"u{number:05d}",
            traits=traits,
            visit=min(0.95, rng.betavariate(1.5, 2.5)),
            churn=rng.uniform(0.01, 0.1),
            buy=rng.uniform(0.05, 0.45),
            plan_changes=rng.choices((0, 1, 2), cum_weights=(75, 95, 100))[0],
        )

    def visit(self, profile: _Profile, day: int) -> None:
        """A later session, sometimes opened by a plan change or a repeated identify."""
        rng = self.rng
        ms = self.start_ms + day * _DAY_MS + self.time_of_day()
        if profile.plan_changes and rng.random() < 0.25:
            profile.plan_changes -= 1
            profile.traits["plan"] = rng.choice(_PLAN_CHANGE[profile.traits["plan"]])
            only_plan = rng.random() < 0.5
            traits = {"plan": profile.traits["plan"]} if only_plan else dict(profile.traits)
            self.emit(ms, "$identify", profile.user_id, {"$set": traits})
            ms += rng.randint(_SECOND_MS, 20 * _SECOND_MS)
        elif rng.random() < _REIDENTIFY_RATE:
            self.emit(ms, "$identify", profile.user_id, {"$set": dict(profile.traits)})
            ms += rng.randint(_SECOND_MS, 20 * _SECOND_MS)
        self.session(profile, ms)

    def session(self, profile: _Profile, ms: int) -> None:
        """Page views, other actions and at most one walk down the purchase funnel."""
        rng = self.rng
        in_funnel = False
        while True:
            if not self.emit(ms, "page_view", profile.user_id, {"path": rng.choice(_PATHS)}):
                return
            ms += rng.randint(3 * _SECOND_MS, 3 * _MINUTE_MS)
            if rng.random() < 0.3:
                ms = self.action(profile.user_id, ms)
            if not in_funnel and rng.random() < profile.buy:
                in_funnel = True
                after = self.purchase(profile.user_id, ms)
                if after is None:
                    return
                ms = after
            if rng.random() < 0.3:  # about 3 to 4 page views a session
                return

    def action(self, user_id: str, ms: int) -> int:
        name, shortest, longest = self.rng.choice(_ACTIONS)
        duration = self.rng.randint(shortest, longest)
        self.emit(ms, name, user_id, {"duration_seconds": duration})
        return ms + duration * _SECOND_MS + self.rng.randint(_SECOND_MS, 30 * _SECOND_MS)

    def purchase(self, user_id: str, ms: int) -> int | None:
        """The funnel after a page view; the time the session goes on, None when it ended."""
        rng = self.rng
        items = rng.randint(1, 4)
        cart = {"sku": f"sku-{rng.randint(1, 60):02d}", "items_count": items}
        if not self.emit(ms, "add_to_cart", user_id, cart):
            return None
        waited = False
        for event, rate in (("checkout_started", _CHECKOUT_RATE), ("order_completed", _ORDER_RATE)):
            if rng.random() >= rate:
                break
            if rng.random() < _LONG_GAP_RATE:
                waited = True
                ms += rng.randint(6 * _HOUR_MS, 40 * _HOUR_MS)
            else:
                ms += rng.randint(10 * _SECOND_MS, 10 * _MINUTE_MS)
            if not self.emit(ms, event, user_id, self.step_properties(event, items)):
                return None
        return None if waited else ms + rng.randint(5 * _SECOND_MS, _MINUTE_MS)

    def step_properties(self, event: str, items: int) -> dict[str, Any]:
        if event == "checkout_started":
            return {"items_count": items}
        self.orders += 1
        revenue = items * self.rng.choice(_PRICES_CENTS)
        return {"order_id": f"o{self.orders:06d}", "revenue_cents": revenue, "items_count": items}

    def add_midnight_pairs(self, pairs: int) -> None:
        """Page views at 23:59:59.999 and, the next day, 00:00:00.000, by an active user."""
        if pairs == 0:
            return
        active = {
            (user_id, (ms - self.start_ms) // _DAY_MS) for ms, _, _, user_id, _ in self.records
        }
        candidates = sorted(
            (user_id, day)
            for user_id, day in active
            if day + 1 < self.days and day + 1 not in self.empty
        )
        for user_id, day in _sample(self.rng, candidates, pairs, "midnight_pairs"):
            midnight = self.start_ms + (day + 1) * _DAY_MS
            self.emit(midnight - 1, "page_view", user_id, {"path": "/"})
            self.emit(midnight, "page_view", user_id, {"path": "/"})

    def add_tied_events(self, ties: int) -> None:
        """Page views that share the timestamp of a later funnel step of the same user."""
        if ties == 0:
            return
        steps = [record for record in self.records if record[2] in _FUNNEL_STEPS]
        for ms, _, _, user_id, _ in _sample(self.rng, steps, ties, "tied_events"):
            self.emit(ms, "page_view", user_id, {"path": "/cart"})


def _sample(rng: random.Random, candidates: list[_T], k: int, what: str) -> list[_T]:
    if not 0 <= k <= len(candidates):
        raise ValueError(f"{what}={k}, but the stream has {len(candidates)} candidates")
    return rng.sample(candidates, k)


def _events(
    records: list[_Record], rng: random.Random, *, duplicates: float, late: float
) -> list[SyntheticEvent]:
    """The records as events: some late, some repeated, all in timestamp order."""
    count = len(records)
    late_by = {
        index: timedelta(milliseconds=rng.randint(26 * _HOUR_MS, 7 * _DAY_MS))
        for index in rng.sample(range(count), round(late * count))
    }
    events = [
        SyntheticEvent(
            event_id=event_id,
            event=event,
            distinct_id=user_id,
            timestamp=_EPOCH + timedelta(milliseconds=ms),
            properties=properties,
            late_by=late_by.get(index, timedelta(0)),
        )
        for index, (ms, event_id, event, user_id, properties) in enumerate(records)
    ]
    repeated = sorted(rng.sample(range(count), round(duplicates * count)))
    # A retried send repeats the event; its own properties keep the copies independent.
    events.extend(
        replace(events[index], properties=copy.deepcopy(events[index].properties))
        for index in repeated
    )
    events.sort(key=lambda event: event.timestamp)
    return events


def _uuid7(ms: int, random_bits: int) -> str:
    """UUIDv7 text: 48 bits of milliseconds, version 7, 74 random bits, variant 10."""
    value = (
        (ms << 80)
        | (0x7 << 76)
        | ((random_bits >> 62) << 64)
        | (0b10 << 62)
        | (random_bits & ((1 << 62) - 1))
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _iso(ms: int) -> str:
    """ISO 8601 UTC text with milliseconds, as `signed_up_at` travels: 2026-01-05T10:00:00.123Z."""
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")[:-6] + "Z"
