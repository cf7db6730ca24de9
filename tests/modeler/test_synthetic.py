"""The synthetic shop: deterministic, realistic, and its edge cases are what they say."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Collection
from datetime import UTC, date, datetime, time, timedelta
from functools import partial

import pytest

from headwater.modeler.synthetic import PURCHASE_FUNNEL, SyntheticEvent, generate

END = date(2026, 3, 1)
START = END - timedelta(days=59)


@pytest.fixture(scope="module")
def shop() -> list[SyntheticEvent]:
    """The demo's size: 2,000 users over 60 days."""
    return generate(users=2_000, days=60, seed=7, end=END)


def small(
    *,
    duplicates: float = 0.0,
    late: float = 0.0,
    midnight_pairs: int = 0,
    tied_events: int = 0,
    empty_days: Collection[date] = (),
) -> list[SyntheticEvent]:
    """200 users over 30 days, with the edge cases asked for."""
    return generate(
        users=200,
        days=30,
        seed=3,
        end=END,
        duplicates=duplicates,
        late=late,
        midnight_pairs=midnight_pairs,
        tied_events=tied_events,
        empty_days=empty_days,
    )


def new_events(base: list[SyntheticEvent], more: list[SyntheticEvent]) -> list[SyntheticEvent]:
    known = {event.event_id for event in base}
    return [event for event in more if event.event_id not in known]


# determinism

DIGEST = """
import hashlib, sys
from datetime import date
from headwater.modeler.synthetic import generate
events = generate(users=300, days=20, seed=11, end=date(2026, 3, 1), duplicates=0.02, late=0.02,
                  midnight_pairs=5, tied_events=5, empty_days=[date(2026, 2, 20)])
sys.stdout.write(hashlib.sha256(repr(events).encode()).hexdigest())
"""


def test_same_seed_same_events_across_processes() -> None:
    digests = {
        subprocess.run(
            [sys.executable, "-c", DIGEST],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("0", "1", "random")
    }
    events = generate(
        users=300,
        days=20,
        seed=11,
        end=END,
        duplicates=0.02,
        late=0.02,
        midnight_pairs=5,
        tied_events=5,
        empty_days=[date(2026, 2, 20)],
    )

    assert digests == {hashlib.sha256(repr(events).encode()).hexdigest()}


def test_another_seed_other_events() -> None:
    assert small() == small()
    assert generate(users=200, days=30, seed=4, end=END) != small()


# shape


def test_events_are_sorted_utc_milliseconds_with_uuid7_ids(shop: list[SyntheticEvent]) -> None:
    stamps = [event.timestamp for event in shop]

    assert stamps == sorted(stamps)
    assert {stamp.tzinfo for stamp in stamps} == {UTC}
    assert {stamp.microsecond % 1_000 for stamp in stamps} == {0}
    assert {uuid.UUID(event.event_id).version for event in shop} == {7}
    assert len({event.event_id for event in shop}) == len(shop)
    assert stamps[0].date() >= START
    assert stamps[-1].date() <= END
    assert {event.late_by for event in shop} == {timedelta(0)}


def test_the_demo_size_has_tens_of_thousands_of_events(shop: list[SyntheticEvent]) -> None:
    counts = Counter(event.event for event in shop)

    assert 40_000 <= len(shop) <= 60_000
    assert len({event.distinct_id for event in shop}) == 2_000
    assert set(counts) == {
        "$identify",
        "page_view",
        "search",
        "feature_used",
        "video_watched",
        *PURCHASE_FUNNEL,
    }
    funnel_counts = [counts[step] for step in PURCHASE_FUNNEL]
    assert funnel_counts == sorted(funnel_counts, reverse=True)
    assert 1_000 <= counts["order_completed"] <= 3_000


# behaviour


def test_every_user_starts_with_a_signup_identify(shop: list[SyntheticEvent]) -> None:
    first: dict[str, SyntheticEvent] = {}
    for event in shop:
        first.setdefault(event.distinct_id, event)

    for event in first.values():
        traits = event.properties["$set"]
        assert event.event == "$identify"
        assert set(traits) == {"email", "name", "plan", "signed_up_at"}
        assert traits["plan"] in {"free", "pro", "team"}
        assert datetime.fromisoformat(traits["signed_up_at"]) == event.timestamp
    signup_days = Counter(event.timestamp.date() for event in first.values())
    assert len(signup_days) == 60  # users sign up over the whole period


def test_some_users_change_plan_and_some_re_identify(shop: list[SyntheticEvent]) -> None:
    plans: dict[str, list[str]] = defaultdict(list)
    repeats = 0
    for event in shop:
        if event.event != "$identify":
            continue
        traits = event.properties["$set"]
        if "plan" in traits and plans[event.distinct_id][-1:] == [traits["plan"]]:
            repeats += 1
        plans[event.distinct_id].append(traits["plan"])

    changed = sum(len(set(history)) > 1 for history in plans.values())
    assert 100 <= changed <= 500
    assert repeats >= 20
    only_plan = [
        e for e in shop if e.event == "$identify" and set(e.properties["$set"]) == {"plan"}
    ]
    assert len(only_plan) >= 50


def test_orders_carry_revenue_and_items(shop: list[SyntheticEvent]) -> None:
    orders = [event.properties for event in shop if event.event == "order_completed"]

    assert all(1 <= order["items_count"] <= 4 for order in orders)
    assert all(order["revenue_cents"] % order["items_count"] == 0 for order in orders)
    assert len({order["order_id"] for order in orders}) == len(orders)
    durations = [
        e.properties["duration_seconds"] for e in shop if "duration_seconds" in e.properties
    ]
    assert min(durations) >= 5
    assert max(durations) <= 1_800


def test_some_funnel_steps_come_more_than_a_day_later(shop: list[SyntheticEvent]) -> None:
    last_cart: dict[str, datetime] = {}
    gaps = []
    for event in shop:
        if event.event == "add_to_cart":
            last_cart[event.distinct_id] = event.timestamp
        elif event.event == "checkout_started":
            gaps.append(event.timestamp - last_cart[event.distinct_id])

    long_gaps = [gap for gap in gaps if gap > timedelta(hours=6)]
    assert 0.05 * len(gaps) <= len(long_gaps) <= 0.2 * len(gaps)
    assert any(gap > timedelta(days=1) for gap in long_gaps)


def test_users_churn_and_weekends_are_quieter(shop: list[SyntheticEvent]) -> None:
    active: dict[date, set[str]] = defaultdict(set)
    days_of: dict[str, set[date]] = defaultdict(set)
    for event in shop:
        active[event.timestamp.date()].add(event.distinct_id)
        days_of[event.distinct_id].add(event.timestamp.date())

    one_day = sum(len(days) == 1 for days in days_of.values())
    assert 0.3 * 2_000 <= one_day <= 0.6 * 2_000
    early = [user for user, days in days_of.items() if min(days) < START + timedelta(days=14)]
    still_there = [user for user in early if max(days_of[user]) > END - timedelta(days=7)]
    assert len(still_there) <= 0.25 * len(early)
    last_four_weeks = [END - timedelta(days=offset) for offset in range(28)]
    weekend = [len(active[day]) for day in last_four_weeks if day.weekday() >= 5]
    weekdays = [len(active[day]) for day in last_four_weeks if day.weekday() < 5]
    assert sum(weekend) / len(weekend) < 0.8 * sum(weekdays) / len(weekdays)


# edge cases


def test_duplicates_repeat_a_fraction_of_events_with_their_ids() -> None:
    base = small()
    events = small(duplicates=0.05)

    copies = Counter(event.event_id for event in events)
    assert sum(count - 1 for count in copies.values()) == round(0.05 * len(base))
    assert max(copies.values()) == 2
    assert list({event.event_id: event for event in events}.values()) == base
    by_id: dict[str, list[SyntheticEvent]] = defaultdict(list)
    for event in events:
        by_id[event.event_id].append(event)
    pairs = [pair for pair in by_id.values() if len(pair) == 2]
    assert all(a == b and a.properties is not b.properties for a, b in pairs)


def test_late_events_keep_their_time_and_arrive_a_day_to_a_week_later() -> None:
    base = small()
    events = small(late=0.1)

    late = [event for event in events if event.late_by]
    assert len(late) == round(0.1 * len(base))
    assert all(timedelta(hours=26) <= e.late_by <= timedelta(days=7) for e in late)
    assert all(e.arrives_at == e.timestamp + e.late_by for e in events)
    assert [(e.event_id, e.timestamp) for e in events] == [(e.event_id, e.timestamp) for e in base]
    # Replayed in arrival order, a late event comes after events more than a day younger.
    arrival = sorted(events, key=lambda e: e.arrives_at)
    newest = arrival[0].timestamp
    out_of_order = 0
    for event in arrival:
        out_of_order += event.timestamp < newest - timedelta(days=1)
        newest = max(newest, event.timestamp)
    assert 0.8 * len(late) <= out_of_order <= len(late)


def test_midnight_pairs_straddle_utc_midnight() -> None:
    base = small()
    added = new_events(base, small(midnight_pairs=12))

    assert len(added) == 24
    before = [e for e in added if e.timestamp.time() == time(23, 59, 59, 999_000)]
    after = [e for e in added if e.timestamp.time() == time(0, 0)]
    assert len(before) == len(after) == 12
    assert {(e.distinct_id, e.timestamp + timedelta(milliseconds=1)) for e in before} == {
        (e.distinct_id, e.timestamp) for e in after
    }
    assert {e.event for e in added} == {"page_view"}
    active = {(e.distinct_id, e.timestamp.date()) for e in base}
    assert all((e.distinct_id, e.timestamp.date()) in active for e in before)


def test_tied_events_share_a_funnel_steps_timestamp() -> None:
    base = small()
    added = new_events(base, small(tied_events=9))

    steps = {(e.distinct_id, e.timestamp) for e in base if e.event in PURCHASE_FUNNEL[1:]}
    assert len(added) == 9
    assert {e.event for e in added} == {"page_view"}
    assert all((e.distinct_id, e.timestamp) in steps for e in added)


def test_empty_days_have_no_events_at_all() -> None:
    empty = [date(2026, 2, 10), date(2026, 2, 11), date(2026, 2, 21)]

    events = small(empty_days=empty, midnight_pairs=40, tied_events=20, duplicates=0.1, late=0.1)

    days = {event.timestamp.date() for event in events}
    assert days.isdisjoint(empty)
    assert min(days) < min(empty)
    assert max(days) > max(empty)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (partial(generate, users=0, days=10, seed=1, end=END), "at least 1"),
        (partial(generate, users=20, days=0, seed=1, end=END), "at least 1"),
        (partial(generate, users=20, days=10, seed=1, end=END, duplicates=1.5), "duplicates is a"),
        (partial(generate, users=20, days=10, seed=1, end=END, late=-0.1), "late is a fraction"),
        (
            partial(generate, users=20, days=10, seed=1, end=END, empty_days=[date(2026, 3, 2)]),
            "must lie between 2026-02-20 and 2026-03-01",
        ),
        (
            partial(generate, users=20, days=1, seed=1, end=END, empty_days=[END]),
            "every day of the period is empty",
        ),
        (
            partial(generate, users=2, days=10, seed=1, end=END, tied_events=10_000),
            "tied_events=10000, but the stream has",
        ),
        (
            partial(generate, users=2, days=10, seed=1, end=END, midnight_pairs=10_000),
            "midnight_pairs=10000, but the stream has",
        ),
    ],
)
def test_arguments_out_of_range_are_refused(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
