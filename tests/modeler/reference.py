"""The marts computed in plain Python: the independent answer the SQL models must equal.

Every function takes the events of ONE project (objects with `event_id`, `event`,
`distinct_id`, `timestamp`, `properties`, such as `headwater.modeler.synthetic.SyntheticEvent`)
and, where it returns mart rows, the `project` that labels them. Rows are NamedTuples whose
field names are the mart's column names, in the order of DESIGN.md, so a test can select
`", ".join(Row._fields)` from the table and compare lists of tuples. The reference covers
every column but surrogate keys (`user_key`, `fact_user_actions.user_key`), which are the
SQL side's to choose. Row values are Python values: days are `date`, instants aware UTC
`datetime`, event ids `uuid.UUID`, absent values None. Row order is given per function.

Choices the SQL models follow:

- **Input.** `timestamp` must be timezone-aware; it is taken in UTC, and an event's day is
  its UTC date. The `events` table holds milliseconds, so give millisecond timestamps.
- **Dedupe.** Events are unique by event_id (compared as UUIDs, so letter case does not
  matter). When copies differ, the LAST one in the input wins, as the latest insert wins
  under `ReplacingMergeTree(inserted_at)` read with FINAL. Everything below sees deduped
  events; ties in time are ordered by the event_id's text.
- **Activity.** A user is a distinct_id; it is active on a day with at least one event of
  any kind that day, `$identify` included.
- **Rates are not rounded.** `retention_rate`, `conversion_rate` and `stickiness` are the
  IEEE-754 double quotient of two integers (`retained / cohort_size`, …), which Python's
  `/` and ClickHouse's `/` both round correctly, so they are equal bit for bit. `round()`
  is not portable: Python's round(7 / 160, 4) is 0.0437, ClickHouse's is 0.0438. A zero
  denominator (only `mau` can be 0, after a 30-day gap) gives 0.0. Round for display only.
- **metrics_active_users.** One row for every day from the first to the last event day,
  empty days included (dau 0, wau and mau possibly not): wau (mau) counts distinct users
  active in the 7 (30) days ending on `day`, that day included; stickiness = dau / mau.
- **retention_cohorts.** A user's cohort is the UTC day, or the Monday-started week, of
  their first event; period k counts the cohort's users active on cohort_start + k days
  (any day of week cohort_start + k weeks); period 0 equals cohort_size. Rows exist for
  every cohort and every k from 0 to `max_period` whose period STARTS on or before the last
  event day (so the current, partial week is included), zero `retained` included. A week
  cohort starts on its Monday even when that is before the first event day. `is_complete`
  is 1 when every day of the period lies before the last event day (that day may still
  be receiving events), else 0.
- **funnel_conversions.** DESIGN.md's definition, not windowFunnel's: a user enters on each
  day with a step-1 event (cohort_day); from one of that day's step-1 events at t0, they
  reach step k when steps 2..k follow in order, each strictly later than the previous one
  and all at most t0 + window (inclusive). `users` counts distinct users per cohort_day
  and step; rows exist for every step of every cohort_day with step-1 users, zero users
  included; conversion_rate = users / users at step 1.
- **agg_daily_events.** One row per day and event name present: events and distinct users.
- **dim_users (SCD2).** Traits tracked: email, name, plan, signed_up_at, from `$identify`
  events' `properties["$set"]`, taken in time order. A trait counts when `$set` holds it
  as a string (signed_up_at: a string that parses as ISO 8601; a naive one means UTC);
  missing, null, non-string or unparseable traits keep their previous value. A version
  opens at the identify's timestamp whenever the merged traits differ from the current
  version's; an identify that changes nothing (or carries no tracked trait) opens nothing,
  so a user without tracked traits has no row. valid_to of a closed version is the next
  version's valid_from; the open version has valid_to 9999-12-31 00:00:00 UTC (ClickHouse
  26's DateTime64(3) holds it) and is_current true.
- **fct_daily_active_users.** One row per day and active user (so the rows of a day sum to
  its dau) over the trailing 90 days (`active_window_days`) that end on the last event
  day: action_count = events, unique_actions = distinct event names, plan and
  signed_up_at from the user's CURRENT dim_users version (None for a user never
  identified), days_since_signup = activity_date - the UTC date of signed_up_at (negative
  when activity precedes signup; None without signed_up_at).
- **fact_user_actions.** One row per event: date_key = YYYYMMDD of the UTC day; a measure
  (duration_seconds, items_count, revenue_cents) is the property's value when it is a JSON
  integer, else None.
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol

__all__ = [
    "OPEN_VALID_TO",
    "TRACKED_TRAITS",
    "DailyActiveUserRow",
    "DailyEventsRow",
    "Event",
    "EventLike",
    "FunnelRow",
    "MetricsActiveUsersRow",
    "RetentionRow",
    "UserActionRow",
    "UserVersionRow",
    "active_users",
    "daily_active_users",
    "daily_events",
    "dedupe",
    "dim_users_scd2",
    "fact_user_actions",
    "fct_daily_active_users",
    "funnel",
    "funnel_users",
    "retention",
]

OPEN_VALID_TO = datetime(9999, 12, 31, tzinfo=UTC)
TRACKED_TRAITS = ("email", "name", "plan", "signed_up_at")

Granularity = Literal["day", "week"]


class EventLike(Protocol):
    """What the reference reads from an event."""

    @property
    def event_id(self) -> str: ...
    @property
    def event(self) -> str: ...
    @property
    def distinct_id(self) -> str: ...
    @property
    def timestamp(self) -> datetime: ...
    @property
    def properties(self) -> Mapping[str, Any]: ...


class Event(NamedTuple):
    """A deduped event, its timestamp in UTC."""

    event_id: uuid.UUID
    event: str
    user_id: str
    at: datetime
    day: date
    properties: Mapping[str, Any]


class MetricsActiveUsersRow(NamedTuple):
    project: str
    day: date
    dau: int
    wau: int
    mau: int
    stickiness: float


class RetentionRow(NamedTuple):
    project: str
    granularity: str
    cohort_start: date
    period: int
    cohort_size: int
    retained: int
    retention_rate: float
    is_complete: int


class FunnelRow(NamedTuple):
    project: str
    funnel: str
    cohort_day: date
    step: int
    step_name: str
    users: int
    conversion_rate: float


class DailyEventsRow(NamedTuple):
    project: str
    day: date
    event: str
    events: int
    users: int


class UserVersionRow(NamedTuple):
    project: str
    user_id: str
    email: str | None
    name: str | None
    plan: str | None
    signed_up_at: datetime | None
    valid_from: datetime
    valid_to: datetime
    is_current: bool


class DailyActiveUserRow(NamedTuple):
    project: str
    activity_date: date
    user_id: str
    plan: str | None
    signed_up_at: datetime | None
    action_count: int
    unique_actions: int
    days_since_signup: int | None


class UserActionRow(NamedTuple):
    project: str
    event_id: uuid.UUID
    action_timestamp: datetime
    user_id: str
    action_type: str
    date_key: int
    duration_seconds: int | None
    items_count: int | None
    revenue_cents: int | None


def dedupe(events: Iterable[EventLike]) -> list[Event]:
    """One event per event_id (the last copy wins), ordered by time then event_id text."""
    by_id: dict[uuid.UUID, Event] = {}
    for raw in events:
        if raw.timestamp.tzinfo is None:
            raise ValueError(f"event {raw.event_id} has a naive timestamp")
        at = raw.timestamp.astimezone(UTC)
        event_id = uuid.UUID(raw.event_id)
        by_id[event_id] = Event(event_id, raw.event, raw.distinct_id, at, at.date(), raw.properties)
    return sorted(by_id.values(), key=lambda e: (e.at, str(e.event_id)))


def daily_active_users(events: Iterable[EventLike]) -> dict[date, set[str]]:
    """The users active on each day that has events."""
    return _active_by_day(dedupe(events))


def _active_by_day(events: Iterable[Event]) -> dict[date, set[str]]:
    active: defaultdict[date, set[str]] = defaultdict(set)
    for event in events:
        active[event.day].add(event.user_id)
    return dict(active)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def active_users(events: Iterable[EventLike], *, project: str) -> list[MetricsActiveUsersRow]:
    """metrics_active_users: every day from the first to the last event day."""
    active = _active_by_day(dedupe(events))
    if not active:
        return []
    rows = []
    for day in _days(min(active), max(active)):
        dau = len(active.get(day, ()))
        wau = len(_union(active, day, 7))
        mau = len(_union(active, day, 30))
        rows.append(MetricsActiveUsersRow(project, day, dau, wau, mau, _ratio(dau, mau)))
    return rows


def _union(active: Mapping[date, set[str]], day: date, span: int) -> set[str]:
    users: set[str] = set()
    for offset in range(span):
        users |= active.get(day - timedelta(days=offset), set())
    return users


def _period_start(day: date, granularity: Granularity) -> date:
    return day - timedelta(days=day.weekday()) if granularity == "week" else day


def retention(
    events: Iterable[EventLike], *, project: str, granularity: Granularity, max_period: int
) -> list[RetentionRow]:
    """retention_cohorts rows for periods 0..max_period that start by the last event day."""
    deduped = dedupe(events)
    if not deduped:
        return []
    step = 7 if granularity == "week" else 1
    last_day = deduped[-1].day
    cohort_of: dict[str, date] = {}
    active: defaultdict[tuple[date, int], set[str]] = defaultdict(set)
    for event in deduped:  # in time order: the first event fixes the cohort
        cohort = cohort_of.setdefault(event.user_id, _period_start(event.day, granularity))
        active[cohort, (event.day - cohort).days // step].add(event.user_id)
    sizes: defaultdict[date, int] = defaultdict(int)
    for cohort in cohort_of.values():
        sizes[cohort] += 1
    rows = []
    for cohort, size in sorted(sizes.items()):
        periods = min(max_period, (last_day - cohort).days // step)
        for period in range(periods + 1):
            retained = len(active.get((cohort, period), ()))
            period_end = cohort + timedelta(days=(period + 1) * step - 1)
            complete = int(period_end < last_day)
            rows.append(
                RetentionRow(
                    project, granularity, cohort, period, size, retained, retained / size, complete
                )
            )
    return rows


def funnel(
    events: Iterable[EventLike],
    *,
    project: str,
    name: str,
    steps: Sequence[str],
    window: timedelta,
) -> list[FunnelRow]:
    """funnel_conversions rows of one funnel, by cohort_day then step."""
    if not steps:
        raise ValueError("a funnel has at least one step")
    times: defaultdict[str, defaultdict[str, list[datetime]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for event in dedupe(events):  # in time order, so every list is sorted
        if event.event in steps:
            times[event.user_id][event.event].append(event.at)
    reached: defaultdict[date, list[int]] = defaultdict(lambda: [0] * len(steps))
    for user_times in times.values():
        for cohort_day, depth in _deepest_by_day(user_times, steps, window).items():
            for step in range(depth):
                reached[cohort_day][step] += 1
    return [
        FunnelRow(project, name, cohort_day, step + 1, steps[step], users, users / counts[0])
        for cohort_day, counts in sorted(reached.items())
        for step, users in enumerate(counts)
    ]


def funnel_users(
    events: Iterable[EventLike], *, steps: Sequence[str], window: timedelta
) -> list[int]:
    """Distinct users who reached each step (1-based order) on at least one entry day."""
    times: defaultdict[str, defaultdict[str, list[datetime]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for event in dedupe(events):
        if event.event in steps:
            times[event.user_id][event.event].append(event.at)
    counts = [0] * len(steps)
    for user_times in times.values():
        deepest = max(_deepest_by_day(user_times, steps, window).values(), default=0)
        for step in range(deepest):
            counts[step] += 1
    return counts


def _deepest_by_day(
    times: Mapping[str, list[datetime]], steps: Sequence[str], window: timedelta
) -> dict[date, int]:
    """For each day with a step-1 event, the deepest step reached from one of them."""
    deepest: dict[date, int] = {}
    for start in times.get(steps[0], []):
        depth = _depth(times, steps, start, start + window)
        deepest[start.date()] = max(depth, deepest.get(start.date(), 0))
    return deepest


def _depth(
    times: Mapping[str, list[datetime]], steps: Sequence[str], start: datetime, deadline: datetime
) -> int:
    """Steps reached from `start`, taking each next step at its earliest qualifying time.

    The earliest choice is optimal: it leaves the most room for the steps after it.
    """
    previous = start
    for depth, step_name in enumerate(steps[1:], start=1):
        candidates = times.get(step_name, [])
        index = bisect_right(candidates, previous)  # strictly later than the previous step
        if index == len(candidates) or candidates[index] > deadline:
            return depth
        previous = candidates[index]
    return len(steps)


def daily_events(events: Iterable[EventLike], *, project: str) -> list[DailyEventsRow]:
    """agg_daily_events rows by day then event name."""
    counts: defaultdict[tuple[date, str], int] = defaultdict(int)
    users: defaultdict[tuple[date, str], set[str]] = defaultdict(set)
    for event in dedupe(events):
        counts[event.day, event.event] += 1
        users[event.day, event.event].add(event.user_id)
    return [
        DailyEventsRow(project, day, name, count, len(users[day, name]))
        for (day, name), count in sorted(counts.items())
    ]


def dim_users_scd2(events: Iterable[EventLike], *, project: str) -> list[UserVersionRow]:
    """dim_users rows (without user_key) by user_id then valid_from."""
    return _dim_users(dedupe(events), project=project)


def _dim_users(events: Iterable[Event], *, project: str) -> list[UserVersionRow]:
    versions: defaultdict[str, list[tuple[datetime, tuple[Any, ...]]]] = defaultdict(list)
    for event in events:
        if event.event != "$identify":
            continue
        history = versions[event.user_id]
        current = history[-1][1] if history else (None,) * len(TRACKED_TRAITS)
        merged = _merge_traits(current, event.properties.get("$set"))
        if merged != current:
            history.append((event.at, merged))
    rows = []
    for user_id, history in sorted(versions.items()):
        if not history:  # identified, but never with a tracked trait
            continue
        ends = [start for start, _ in history[1:]] + [OPEN_VALID_TO]
        for (start, traits), end in zip(history, ends, strict=True):
            email, name, plan, signed_up_at = traits
            is_current = end == OPEN_VALID_TO
            rows.append(
                UserVersionRow(
                    project, user_id, email, name, plan, signed_up_at, start, end, is_current
                )
            )
    return rows


def _merge_traits(current: tuple[Any, ...], traits: object) -> tuple[Any, ...]:
    if not isinstance(traits, Mapping):
        return current
    merged = list(current)
    for index, trait in enumerate(TRACKED_TRAITS):
        value = _trait_value(trait, traits.get(trait))
        if value is not None:
            merged[index] = value
    return tuple(merged)


def _trait_value(trait: str, value: object) -> str | datetime | None:
    if not isinstance(value, str):
        return None
    if trait != "signed_up_at":
        return value
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        return None
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def fct_daily_active_users(
    events: Iterable[EventLike], *, project: str, window_days: int = 90
) -> list[DailyActiveUserRow]:
    """fct_daily_active_users rows by activity_date then user_id, for the `window_days`
    days that end on the last event day."""
    deduped = dedupe(events)
    if not deduped:
        return []
    newest = deduped[-1].day
    current = {row.user_id: row for row in _dim_users(deduped, project=project) if row.is_current}
    names: defaultdict[tuple[date, str], list[str]] = defaultdict(list)
    for event in deduped:
        names[event.day, event.user_id].append(event.event)
    rows = []
    for (day, user_id), actions in sorted(names.items()):
        if (newest - day).days >= window_days:
            continue
        version = current.get(user_id)
        plan = version.plan if version else None
        signed_up_at = version.signed_up_at if version else None
        since = (day - signed_up_at.date()).days if signed_up_at else None
        rows.append(
            DailyActiveUserRow(
                project, day, user_id, plan, signed_up_at, len(actions), len(set(actions)), since
            )
        )
    return rows


def fact_user_actions(events: Iterable[EventLike], *, project: str) -> list[UserActionRow]:
    """fact_user_actions rows (without user_key) by action_timestamp then event_id text."""
    return [
        UserActionRow(
            project,
            event.event_id,
            event.at,
            event.user_id,
            event.event,
            int(event.day.strftime("%Y%m%d")),
            duration_seconds=_measure(event.properties.get("duration_seconds")),
            items_count=_measure(event.properties.get("items_count")),
            revenue_cents=_measure(event.properties.get("revenue_cents")),
        )
        for event in dedupe(events)
    ]


def _measure(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
