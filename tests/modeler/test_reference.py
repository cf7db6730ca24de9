"""The reference computation on small streams worked out by hand."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from headwater.modeler.synthetic import PURCHASE_FUNNEL, generate
from tests.modeler import reference
from tests.modeler.reference import (
    OPEN_VALID_TO,
    DailyActiveUserRow,
    DailyEventsRow,
    FunnelRow,
    MetricsActiveUsersRow,
    RetentionRow,
    UserActionRow,
    UserVersionRow,
)

P = "shop"
PURCHASE = ("page_view", "add_to_cart", "checkout_started", "order_completed")


@dataclass(frozen=True)
class Ev:
    event_id: str
    event: str
    distinct_id: str
    timestamp: datetime
    properties: dict[str, Any] = field(default_factory=dict)


def ev(user: str, event: str, when: str, properties: dict[str, Any] | None = None) -> Ev:
    """An event whose id follows from its content: writing one twice makes a duplicate."""
    props = properties or {}
    event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{user}|{event}|{when}|{sorted(props.items())}")
    return Ev(str(event_id), event, user, datetime.fromisoformat(when), props)


def at(when: str) -> datetime:
    return datetime.fromisoformat(when)


def identify(user: str, when: str, **traits: object) -> Ev:
    return ev(user, "$identify", when, {"$set": traits})


# dedupe


def test_dedupe_keeps_one_copy_per_event_id_the_last_one() -> None:
    first = ev("a", "page_view", "2026-03-02T10:00:00.000Z", {"path": "/"})
    retried = Ev(first.event_id.upper(), "page_view", "a", first.timestamp, {"path": "/shop"})
    other = ev("a", "page_view", "2026-03-02T09:00:00.000Z")

    deduped = reference.dedupe([first, other, first, retried])

    assert [(str(e.event_id), e.at, e.properties) for e in deduped] == [
        (other.event_id, at("2026-03-02T09:00:00.000Z"), {}),
        (first.event_id, at("2026-03-02T10:00:00.000Z"), {"path": "/shop"}),
    ]


def test_dedupe_refuses_naive_timestamps() -> None:
    naive = Ev(str(uuid.UUID(int=1)), "page_view", "a", datetime(2026, 3, 2, 10))

    with pytest.raises(ValueError, match="naive timestamp"):
        reference.dedupe([naive])


# daily_active_users


def test_days_are_utc_dates_on_both_sides_of_midnight() -> None:
    events = [
        ev("a", "page_view", "2026-03-01T23:59:59.999Z"),
        ev("a", "page_view", "2026-03-02T00:00:00.000Z"),
        ev("b", "page_view", "2026-03-02T00:30:00.000+02:00"),  # 22:30 UTC, the day before
        ev("c", "page_view", "2026-03-01T20:00:00.000-05:00"),  # 01:00 UTC, the day after
    ]

    assert reference.daily_active_users(events) == {
        date(2026, 3, 1): {"a", "b"},
        date(2026, 3, 2): {"a", "c"},
    }


# active_users


def test_active_users_cover_every_day_with_rolling_windows() -> None:
    events = [
        ev("a", "page_view", "2026-03-01T12:00:00.000Z"),
        ev("b", "add_to_cart", "2026-03-02T23:59:59.999Z"),
        ev("b", "add_to_cart", "2026-03-02T23:59:59.999Z"),  # a duplicate
        ev("c", "$identify", "2026-03-08T00:00:00.000Z"),
        ev("d", "page_view", "2026-03-31T08:00:00.000Z"),
        ev("d", "page_view", "2026-04-01T08:00:00.000Z"),
    ]

    rows = reference.active_users(events, project=P)

    assert [row.day for row in rows] == [
        date(2026, 3, 1) + timedelta(days=offset) for offset in range(32)
    ]
    assert [row.dau for row in rows] == [1, 1] + [0] * 5 + [1] + [0] * 22 + [1, 1]
    by_day = {row.day: row for row in rows}
    assert [by_day[date(2026, 3, day)] for day in (1, 2, 3, 7, 8, 9, 14, 15, 30, 31)] == [
        MetricsActiveUsersRow(P, date(2026, 3, 1), 1, 1, 1, 1.0),
        MetricsActiveUsersRow(P, date(2026, 3, 2), 1, 2, 2, 0.5),
        MetricsActiveUsersRow(P, date(2026, 3, 3), 0, 2, 2, 0.0),  # an empty day
        MetricsActiveUsersRow(P, date(2026, 3, 7), 0, 2, 2, 0.0),  # 7 days: 1st..7th
        MetricsActiveUsersRow(P, date(2026, 3, 8), 1, 2, 3, 0.3333333333333333),  # a left
        MetricsActiveUsersRow(P, date(2026, 3, 9), 0, 1, 3, 0.0),
        MetricsActiveUsersRow(P, date(2026, 3, 14), 0, 1, 3, 0.0),
        MetricsActiveUsersRow(P, date(2026, 3, 15), 0, 0, 3, 0.0),
        MetricsActiveUsersRow(P, date(2026, 3, 30), 0, 0, 3, 0.0),  # 30 days: 1st..30th
        MetricsActiveUsersRow(P, date(2026, 3, 31), 1, 1, 3, 0.3333333333333333),  # a left
    ]
    assert rows[-1] == MetricsActiveUsersRow(P, date(2026, 4, 1), 1, 1, 2, 0.5)  # b left


def test_stickiness_is_zero_when_nobody_was_active_for_30_days() -> None:
    events = [
        ev("a", "page_view", "2026-01-01T12:00:00.000Z"),
        ev("a", "page_view", "2026-03-01T12:00:00.000Z"),
    ]

    by_day = {row.day: row for row in reference.active_users(events, project=P)}

    assert len(by_day) == 60
    assert by_day[date(2026, 1, 30)] == MetricsActiveUsersRow(P, date(2026, 1, 30), 0, 0, 1, 0.0)
    assert by_day[date(2026, 1, 31)] == MetricsActiveUsersRow(P, date(2026, 1, 31), 0, 0, 0, 0.0)


def test_no_events_no_rows() -> None:
    assert reference.active_users([], project=P) == []
    assert reference.retention([], project=P, granularity="day", max_period=3) == []
    assert (
        reference.funnel([], project=P, name="purchase", steps=PURCHASE, window=timedelta(1)) == []
    )


# retention


def day_retention_events() -> list[Ev]:
    return [
        ev("c", "page_view", "2026-03-05T10:00:00.000Z"),  # arrives before c's first event
        ev("a", "page_view", "2026-03-02T10:00:00.000Z"),
        ev("a", "page_view", "2026-03-03T10:00:00.000Z"),
        ev("a", "page_view", "2026-03-05T10:00:00.000Z"),
        ev("b", "page_view", "2026-03-02T23:59:59.999Z"),
        ev("b", "page_view", "2026-03-04T00:00:00.000Z"),
        ev("c", "page_view", "2026-03-03T08:00:00.000Z"),
        ev("c", "page_view", "2026-03-03T08:00:00.000Z"),  # a duplicate
    ]


def test_daily_retention_stops_at_max_period() -> None:
    rows = reference.retention(day_retention_events(), project=P, granularity="day", max_period=2)

    assert rows == [
        RetentionRow(P, "day", date(2026, 3, 2), 0, 2, 2, 1.0, 1),
        RetentionRow(P, "day", date(2026, 3, 2), 1, 2, 1, 0.5, 1),
        RetentionRow(P, "day", date(2026, 3, 2), 2, 2, 1, 0.5, 1),
        RetentionRow(P, "day", date(2026, 3, 3), 0, 1, 1, 1.0, 1),
        RetentionRow(P, "day", date(2026, 3, 3), 1, 1, 0, 0.0, 1),
        RetentionRow(P, "day", date(2026, 3, 3), 2, 1, 1, 1.0, 0),  # the 5th: the last day
    ]


def test_daily_retention_stops_at_the_last_event_day() -> None:
    rows = reference.retention(day_retention_events(), project=P, granularity="day", max_period=30)

    assert [(row.cohort_start, row.period, row.retained) for row in rows] == [
        (date(2026, 3, 2), 0, 2),
        (date(2026, 3, 2), 1, 1),
        (date(2026, 3, 2), 2, 1),
        (date(2026, 3, 2), 3, 1),  # the 5th, the last event day
        (date(2026, 3, 3), 0, 1),
        (date(2026, 3, 3), 1, 0),
        (date(2026, 3, 3), 2, 1),
    ]


def test_weekly_retention_uses_monday_started_weeks() -> None:
    events = [
        ev("a", "page_view", "2026-03-02T00:00:00.000Z"),  # Monday
        ev("a", "page_view", "2026-03-08T12:00:00.000Z"),  # Sunday, still week 0
        ev("a", "page_view", "2026-03-16T12:00:00.000Z"),
        ev("b", "page_view", "2026-03-08T23:59:59.999Z"),  # first event: cohort of the 2nd
        ev("b", "page_view", "2026-03-09T00:00:00.000Z"),  # Monday: week 1
        ev("c", "page_view", "2026-03-11T12:00:00.000Z"),
        ev("c", "page_view", "2026-03-17T12:00:00.000Z"),  # Tuesday, the last event day
    ]

    rows = reference.retention(events, project=P, granularity="week", max_period=8)

    assert rows == [
        RetentionRow(P, "week", date(2026, 3, 2), 0, 2, 2, 1.0, 1),
        RetentionRow(P, "week", date(2026, 3, 2), 1, 2, 1, 0.5, 1),
        RetentionRow(P, "week", date(2026, 3, 2), 2, 2, 1, 0.5, 0),  # partial week: included
        RetentionRow(P, "week", date(2026, 3, 9), 0, 1, 1, 1.0, 1),
        RetentionRow(P, "week", date(2026, 3, 9), 1, 1, 1, 1.0, 0),
    ]


def test_weekly_cohort_starts_on_the_monday_before_a_sunday_signup() -> None:
    events = [
        ev("a", "page_view", "2026-03-01T12:00:00.000Z"),  # Sunday
        ev("a", "page_view", "2026-03-02T12:00:00.000Z"),  # Monday
    ]

    rows = reference.retention(events, project=P, granularity="week", max_period=4)

    assert rows == [
        RetentionRow(P, "week", date(2026, 2, 23), 0, 1, 1, 1.0, 1),
        RetentionRow(P, "week", date(2026, 2, 23), 1, 1, 1, 1.0, 0),
    ]


# funnel


def funnel_events() -> list[Ev]:
    return [
        # u1, windowFunnel's pitfall: a newer step 1 shares a timestamp with step 2.
        ev("u1", "page_view", "2026-03-02T10:00:00.000Z"),
        ev("u1", "add_to_cart", "2026-03-02T10:05:00.000Z"),
        ev("u1", "page_view", "2026-03-02T10:05:00.000Z"),
        ev("u1", "checkout_started", "2026-03-02T10:10:00.000Z"),
        ev("u1", "checkout_started", "2026-03-02T10:10:00.000Z"),  # a duplicate
        # u2, the window is inclusive: step 2 exactly a day later counts, step 3 does not.
        ev("u2", "page_view", "2026-03-02T12:00:00.000Z"),
        ev("u2", "add_to_cart", "2026-03-03T12:00:00.000Z"),
        ev("u2", "checkout_started", "2026-03-03T12:00:00.001Z"),
        # u3, a step at the same time as the previous one is not after it.
        ev("u3", "page_view", "2026-03-02T09:00:00.000Z"),
        ev("u3", "add_to_cart", "2026-03-02T09:00:00.000Z"),
        ev("u3", "order_completed", "2026-03-02T09:30:00.000Z"),
        # u4, steps out of order.
        ev("u4", "add_to_cart", "2026-03-02T08:00:00.000Z"),
        ev("u4", "page_view", "2026-03-02T08:30:00.000Z"),
        ev("u4", "checkout_started", "2026-03-02T08:40:00.000Z"),
        ev("u4", "order_completed", "2026-03-02T08:50:00.000Z"),
        # u5, the day's later step 1 goes further than its earlier one.
        ev("u5", "page_view", "2026-03-02T01:00:00.000Z"),
        ev("u5", "add_to_cart", "2026-03-02T01:10:00.000Z"),
        ev("u5", "page_view", "2026-03-02T23:00:00.000Z"),
        ev("u5", "add_to_cart", "2026-03-02T23:10:00.000Z"),
        ev("u5", "checkout_started", "2026-03-03T22:00:00.000Z"),
        ev("u5", "order_completed", "2026-03-03T22:30:00.000Z"),
        # u6 enters on two days; the step 2 of the first entry comes before the second one.
        ev("u6", "page_view", "2026-03-02T20:00:00.000Z"),
        ev("u6", "add_to_cart", "2026-03-03T08:00:00.000Z"),
        ev("u6", "page_view", "2026-03-03T09:00:00.000Z"),
    ]


def test_funnel_follows_the_design_definition() -> None:
    rows = reference.funnel(
        funnel_events(), project=P, name="purchase", steps=PURCHASE, window=timedelta(days=1)
    )

    assert rows == [
        FunnelRow(P, "purchase", date(2026, 3, 2), 1, "page_view", 6, 1.0),
        FunnelRow(P, "purchase", date(2026, 3, 2), 2, "add_to_cart", 4, 0.6666666666666666),
        FunnelRow(P, "purchase", date(2026, 3, 2), 3, "checkout_started", 2, 0.3333333333333333),
        FunnelRow(P, "purchase", date(2026, 3, 2), 4, "order_completed", 1, 0.16666666666666666),
        FunnelRow(P, "purchase", date(2026, 3, 3), 1, "page_view", 1, 1.0),
        FunnelRow(P, "purchase", date(2026, 3, 3), 2, "add_to_cart", 0, 0.0),
        FunnelRow(P, "purchase", date(2026, 3, 3), 3, "checkout_started", 0, 0.0),
        FunnelRow(P, "purchase", date(2026, 3, 3), 4, "order_completed", 0, 0.0),
    ]


def test_a_shorter_window_cuts_the_chain() -> None:
    rows = reference.funnel(
        funnel_events(), project=P, name="quick", steps=PURCHASE[:3], window=timedelta(minutes=10)
    )

    # u1 (10:00 → 10:05 → 10:10, the edge) and u5 (01:00 → 01:10) reach step 2 or more.
    assert [(row.cohort_day, row.step, row.users) for row in rows] == [
        (date(2026, 3, 2), 1, 6),
        (date(2026, 3, 2), 2, 2),
        (date(2026, 3, 2), 3, 1),
        (date(2026, 3, 3), 1, 1),
        (date(2026, 3, 3), 2, 0),
        (date(2026, 3, 3), 3, 0),
    ]


def test_a_funnel_needs_a_step() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        reference.funnel(funnel_events(), project=P, name="none", steps=(), window=timedelta(1))


# daily_events


def test_daily_events_count_deduped_events_and_users() -> None:
    events = [
        ev("a", "page_view", "2026-03-01T23:59:59.999Z"),
        ev("a", "page_view", "2026-03-02T00:00:00.000Z"),
        ev("b", "page_view", "2026-03-02T10:00:00.000Z"),
        ev("b", "page_view", "2026-03-02T10:00:00.000Z"),  # a duplicate
        ev("b", "page_view", "2026-03-02T10:00:00.000Z", {"path": "/"}),  # same time, new id
        ev("b", "add_to_cart", "2026-03-02T10:01:00.000Z", {"items_count": 2}),
    ]

    assert reference.daily_events(events, project=P) == [
        DailyEventsRow(P, date(2026, 3, 1), "page_view", 1, 1),
        DailyEventsRow(P, date(2026, 3, 2), "add_to_cart", 1, 1),
        DailyEventsRow(P, date(2026, 3, 2), "page_view", 3, 2),
    ]


# dim_users


def identify_events() -> list[Ev]:
    signup = "2026-03-01T10:00:00.000Z"
    return [
        identify("a", signup, email="a@x.io", name="A", plan="free", signed_up_at=signup),
        ev("a", "page_view", "2026-03-01T10:00:05.000Z"),
        identify("a", "2026-03-03T09:00:00.000Z", email="a@x.io", name="A", plan="free"),
        identify("a", "2026-03-05T12:00:00.000Z", plan="pro"),
        identify("a", "2026-03-05T12:00:00.000Z", plan="pro"),  # a duplicate
        ev("a", "add_to_cart", "2026-03-05T12:01:00.000Z"),
        ev("a", "page_view", "2026-03-05T12:02:00.000Z"),
        ev("a", "page_view", "2026-03-05T12:03:00.000Z"),
        identify("a", "2026-03-06T12:00:00.000Z", plan=None, email=42, signed_up_at="soon"),
        identify("a", "2026-03-08T12:00:00.000Z", name="Ada"),
        identify("a", "2026-03-04T12:00:00.000Z", plan="team"),  # late: arrives last
        identify("b", "2026-03-02T12:00:00.000Z"),  # no tracked trait
        ev("b", "page_view", "2026-03-02T12:00:01.000Z"),
        ev("c", "page_view", "2026-02-28T22:00:00.000Z"),  # before the signup
        identify(
            "c", "2026-03-02T08:00:00.000Z", plan="team", signed_up_at="2026-03-01T01:00+02:00"
        ),
    ]


def test_dim_users_opens_a_version_per_change_of_tracked_traits() -> None:
    signed_up = at("2026-03-01T10:00:00.000Z")
    a = "a@x.io"

    rows = reference.dim_users_scd2(identify_events(), project=P)

    assert rows == [
        UserVersionRow(
            P, "a", a, "A", "free", signed_up, signed_up, at("2026-03-04T12:00Z"), False
        ),
        UserVersionRow(
            P,
            "a",
            a,
            "A",
            "team",
            signed_up,
            at("2026-03-04T12:00Z"),
            at("2026-03-05T12:00Z"),
            False,
        ),
        UserVersionRow(
            P,
            "a",
            a,
            "A",
            "pro",
            signed_up,
            at("2026-03-05T12:00Z"),
            at("2026-03-08T12:00Z"),
            False,
        ),
        UserVersionRow(
            P, "a", a, "Ada", "pro", signed_up, at("2026-03-08T12:00Z"), OPEN_VALID_TO, True
        ),
        UserVersionRow(
            P,
            "c",
            None,
            None,
            "team",
            at("2026-02-28T23:00:00.000Z"),
            at("2026-03-02T08:00Z"),
            OPEN_VALID_TO,
            True,
        ),
    ]
    assert datetime(9999, 12, 31, 0, 0, tzinfo=UTC) == OPEN_VALID_TO


def test_fct_daily_active_users_uses_the_current_plan() -> None:
    signed_up = at("2026-03-01T10:00:00.000Z")

    rows = reference.fct_daily_active_users(identify_events(), project=P)

    assert rows == [
        DailyActiveUserRow(P, date(2026, 2, 28), "c", "team", at("2026-02-28T23:00Z"), 1, 1, 0),
        DailyActiveUserRow(P, date(2026, 3, 1), "a", "pro", signed_up, 2, 2, 0),
        DailyActiveUserRow(P, date(2026, 3, 2), "b", None, None, 2, 2, None),
        DailyActiveUserRow(P, date(2026, 3, 2), "c", "team", at("2026-02-28T23:00Z"), 1, 1, 2),
        DailyActiveUserRow(P, date(2026, 3, 3), "a", "pro", signed_up, 1, 1, 2),
        DailyActiveUserRow(P, date(2026, 3, 4), "a", "pro", signed_up, 1, 1, 3),
        DailyActiveUserRow(P, date(2026, 3, 5), "a", "pro", signed_up, 4, 3, 4),
        DailyActiveUserRow(P, date(2026, 3, 6), "a", "pro", signed_up, 1, 1, 5),
        DailyActiveUserRow(P, date(2026, 3, 8), "a", "pro", signed_up, 1, 1, 7),
    ]


def test_days_since_signup_is_negative_before_the_signup() -> None:
    events = [
        ev("d", "page_view", "2026-02-27T23:59:59.999Z"),
        identify("d", "2026-03-01T00:00:00.000Z", signed_up_at="2026-03-01T00:00:00.000Z"),
    ]

    rows = reference.fct_daily_active_users(events, project=P)

    assert [(row.activity_date, row.days_since_signup) for row in rows] == [
        (date(2026, 2, 27), -2),
        (date(2026, 3, 1), 0),
    ]


# fact_user_actions


def test_fact_user_actions_read_integer_measures_only() -> None:
    events = [
        ev("a", "video_watched", "2026-03-01T23:59:59.999Z", {"duration_seconds": 95}),
        ev(
            "a",
            "order_completed",
            "2026-03-02T00:00:00.000Z",
            {"revenue_cents": 2998, "items_count": 2},
        ),
        ev(
            "a",
            "add_to_cart",
            "2026-03-02T00:00:01.000Z",
            {"items_count": True, "revenue_cents": 9.5},
        ),
        ev("a", "search", "2026-03-02T00:00:02.000Z", {"duration_seconds": "12"}),
    ]
    ids = [uuid.UUID(event.event_id) for event in events]

    assert reference.fact_user_actions(events, project=P) == [
        UserActionRow(
            P,
            ids[0],
            at("2026-03-01T23:59:59.999Z"),
            "a",
            "video_watched",
            20260301,
            95,
            None,
            None,
        ),
        UserActionRow(
            P,
            ids[1],
            at("2026-03-02T00:00:00.000Z"),
            "a",
            "order_completed",
            20260302,
            None,
            2,
            2998,
        ),
        UserActionRow(
            P,
            ids[2],
            at("2026-03-02T00:00:01.000Z"),
            "a",
            "add_to_cart",
            20260302,
            None,
            None,
            None,
        ),
        UserActionRow(
            P, ids[3], at("2026-03-02T00:00:02.000Z"), "a", "search", 20260302, None, None, None
        ),
    ]


# the demo-size shop


def test_the_marts_agree_with_each_other_on_the_synthetic_shop() -> None:
    events = generate(
        users=2_000,
        days=60,
        seed=5,
        end=date(2026, 3, 1),
        duplicates=0.02,
        late=0.02,
        midnight_pairs=50,
        tied_events=50,
        empty_days=[date(2026, 2, 1)],
    )
    unique = len({event.event_id for event in events})

    metrics = reference.active_users(events, project=P)
    daily = reference.fct_daily_active_users(events, project=P)
    weekly = reference.retention(events, project=P, granularity="week", max_period=12)
    purchase = reference.funnel(
        events, project=P, name="purchase", steps=PURCHASE_FUNNEL, window=timedelta(days=1)
    )
    current = [row for row in reference.dim_users_scd2(events, project=P) if row.is_current]

    assert len(metrics) == 60
    assert next(row for row in metrics if row.day == date(2026, 2, 1)).dau == 0
    assert sum(row.dau for row in metrics) == len(daily)
    assert sum(row.action_count for row in daily) == unique
    assert sum(row.events for row in reference.daily_events(events, project=P)) == unique
    assert len(reference.fact_user_actions(events, project=P)) == unique
    assert sum(row.cohort_size for row in weekly if row.period == 0) == 2_000
    assert all(row.retained == row.cohort_size for row in weekly if row.period == 0)
    assert len(current) == 2_000
    for cohort_day in {row.cohort_day for row in purchase}:
        users = [row.users for row in purchase if row.cohort_day == cohort_day]
        assert users == sorted(users, reverse=True)
