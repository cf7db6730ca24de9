"""Generated event logs through the real gateway and the models, against the reference.

Hypothesis writes event logs with the edges that break models: data starting on any day
of the week, events at 00:00:00.000 and 23:59:59.999, funnel steps tied in time (and a
step 1 sharing a later step's time), steps exactly one window apart, late events sent
after the first run (some before the first day), resent duplicates (in the same request
and after the run), users seen once, gaps of days and weeks, times years ago, within the
last 23 hours and up to 22 hours ahead, and a neighbour project in the same database
with the same user names. Each log goes through the pipeline: its first part is sent to
a gateway on loopback (`POST /v1/events` without `sent_at`, so times are stored as
sent), the models run, the rest is sent (late events, resends, new days), the models run
again. After each run, for each project, the stored events, `metrics_active_users`,
`retention_cohorts` (day, 30 periods; week, 12), `funnel_conversions` (`purchase`) and
`agg_daily_events` must equal, cell by cell, what `tests/modeler/reference.py` computes
from the events the gateway acknowledged (all of them: none is refused).

The gateway starts once per test; each example first empties its database (the events
truncated, every table the models made dropped), which leaves what a new one would.
Times are placed back from the day of the run (the gateway's window follows arrival), and
event ids are drawn afresh for every run of an example, so that a replay while shrinking
is not taken for a resend by the dedupe store.

The suite runs a fixed seed and a few examples. More, by hand (`--timeout 0`: no per-test
timeout; `-p no:timeout` would leave the `timeout` ini option unknown, an error here):

    HEADWATER_GENERATED_EXAMPLES=200 uv run --frozen pytest \\
        tests/modeler/test_generated.py --timeout 0

The tests after the generated one are the minimal logs of the disagreements it found.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple

import httpx
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from headwater.modeler import FileLock, ModelConfig, Runner
from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import GatewayFactory, RunningGateway

from . import reference as ref

# The gateway tests' fixture: fixtures of tests/gateway/conftest.py are not seen from here.
start_gateway = gateway_fixtures.start_gateway

EXAMPLES = int(os.environ.get("HEADWATER_GENERATED_EXAMPLES", "12"))

PROJECT, OTHER = "shop", "blog"
KEYS = {PROJECT: "shop-key", OTHER: "blog-key"}
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
STEPS = ("page_view", "add_to_cart", "checkout_started", "order_completed")
NAMES = (*STEPS, "search", "$identify")
RETENTION: tuple[tuple[Literal["day", "week"], int], ...] = (("day", 30), ("week", 12))

Phase = Literal[1, 2]  # sent before the first run, or after it

# -- a log, its times not yet on the calendar --------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One event sent. A resend repeats `key`, so the event id; `ms` counts from the
    midnight that starts the log's first day, or (`from_now`) from the time of sending."""

    key: int
    project: str
    event: str
    user: str
    ms: int
    from_now: bool
    phase: Phase


@dataclass(frozen=True)
class Log:
    days_back: int  # from the log's first day to today
    planned: tuple[Planned, ...]  # in the order sent, resends included


@dataclass(frozen=True)
class Sent:
    """An event as sent to the gateway (what the reference reads)."""

    event_id: str
    event: str
    distinct_id: str
    timestamp: datetime
    properties: dict[str, Any]


# -- strategies ----------------------------------------------------------------------------

names = st.sampled_from(NAMES)
projects = st.sampled_from([PROJECT, PROJECT, OTHER])
late = st.sampled_from([False, False, True])  # sent after the first run though older
times_of_day = st.sampled_from([0, DAY_MS - 1, 1, DAY_MS // 2]) | st.integers(0, DAY_MS - 1)
# between two funnel steps: ties, one millisecond, exactly the window and just over it
step_gaps = st.sampled_from([0, 0, 1, 1_000, HOUR_MS, DAY_MS - 1, DAY_MS, DAY_MS + 1])
day_gaps = st.sampled_from([0, 1, 1, 2, 3, 7, 8, 14, 29])  # between active days
# from the time of sending: years ago, within the last 23 hours, up to 22 hours ahead
from_now = st.sampled_from(
    [-3_600 * DAY_MS, -1_000 * DAY_MS - 1, -23 * HOUR_MS + 1, -1, 0, 22 * HOUR_MS]
) | st.integers(-23 * HOUR_MS, 22 * HOUR_MS)


@dataclass
class Draft:
    """A log being drawn: its active days, users and events so far."""

    days: list[int]
    users: list[str]
    first: int  # the day of the first event sent
    split: int  # the days from this one on are new days, sent after the first run
    backfill: bool  # the days before `first` are sent after the first run
    events: list[Planned]

    def add(
        self, project: str, event: str, user: str, ms: int, *, late: bool, from_now: bool = False
    ) -> None:
        day = ms // DAY_MS
        backfilled = self.backfill and day < self.first
        second = late or (not from_now and (day >= self.split or backfilled))
        key = len(self.events)
        self.events.append(Planned(key, project, event, user, ms, from_now, 2 if second else 1))

    def on_a_day(self, draw: st.DrawFn) -> int:
        return draw(st.sampled_from(self.days)) * DAY_MS + draw(times_of_day)


@st.composite
def logs(draw: st.DrawFn) -> Log:
    """A log of 1-60 days ending 4 days to ~9.5 years ago, with events from now too."""
    span = draw(st.sampled_from([1, 7, 60]) | st.integers(1, 60))
    end_back = draw(st.sampled_from([4, 5, 400, 3_400]) | st.integers(4, 3_400))
    offsets = [0]
    for gap in draw(st.lists(day_gaps, max_size=12)):
        if offsets[-1] + gap < span:
            offsets.append(offsets[-1] + gap)
    days = sorted(set(offsets))
    users = [f"u{n}" for n in range(draw(st.integers(1, 30)))]
    # the first event sent, on the middle day: the days before it may come late, after it new
    first = days[len(days) // 2] * DAY_MS + draw(times_of_day)
    split = draw(st.sampled_from([d for d in days if d > first // DAY_MS] or [span]))
    log = Draft(days, users, first // DAY_MS, split, draw(st.booleans()), [])
    log.events.append(Planned(0, PROJECT, draw(names), users[0], first, False, phase=1))
    _events(draw, log)
    _journeys(draw, log)
    for n in range(draw(st.integers(0, 4))):  # users seen once
        on_a_day = log.on_a_day(draw)
        log.add(draw(projects), draw(names), f"once{n}", on_a_day, late=draw(late))
    for n in range(draw(st.integers(0, 3))):  # odd times, from the time of sending
        project, user = draw(projects), draw(st.sampled_from([*users, f"odd{n}"]))
        log.add(project, draw(names), user, draw(from_now), late=draw(late), from_now=True)
    planned = log.events + _resends(draw, log.events)
    return Log(days_back=end_back + span - 1, planned=tuple(planned))


def _events(draw: st.DrawFn, log: Draft) -> None:
    for _ in range(draw(st.integers(0, 40))):
        project, user = draw(projects), draw(st.sampled_from(log.users))
        log.add(project, draw(names), user, log.on_a_day(draw), late=draw(late))


def _journeys(draw: st.DrawFn, log: Draft) -> None:
    """Users going down the funnel, and steps of it again at (or 1 ms around) the
    journey's times: a step 1 tied with a later step is what windowFunnel gets wrong."""
    for _ in range(draw(st.integers(0, 8))):
        project, user = draw(projects), draw(st.sampled_from(log.users))
        times = [log.on_a_day(draw)]
        for _ in range(draw(st.integers(0, 3))):
            times.append(times[-1] + draw(step_gaps))
        for step, ms in zip(STEPS, times, strict=False):
            log.add(project, step, user, ms, late=draw(late))
        for _ in range(draw(st.integers(0, 2))):
            ms = draw(st.sampled_from(times)) + draw(st.sampled_from([-1, 0, 0, 1]))
            log.add(project, draw(st.sampled_from(STEPS)), user, ms, late=draw(late))


def _resends(draw: st.DrawFn, events: list[Planned]) -> list[Planned]:
    """Copies of sent events, in the same request or after the first run."""
    return [
        replace(original, phase=draw(st.sampled_from([original.phase, 2])))
        for original in draw(st.lists(st.sampled_from(events), max_size=6))
    ]


# -- the pipeline --------------------------------------------------------------------------

Placed = list[tuple[Phase, str, Sent]]  # (phase, project, event), in the order sent


def arrival_time() -> datetime:
    """Now, in whole milliseconds (what the events table holds)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def place(log: Log, now: datetime) -> Placed:
    """The log's events on the calendar; fresh ids for this run."""
    first_day = datetime.combine(now.date(), datetime.min.time(), UTC) - timedelta(log.days_back)
    ids = {planned.key: str(uuid.uuid4()) for planned in log.planned}
    placed: Placed = []
    for p in log.planned:
        at = (now if p.from_now else first_day) + timedelta(milliseconds=p.ms)
        placed.append((p.phase, p.project, Sent(ids[p.key], p.event, p.user, at, {})))
    return placed


def describe(placed: Placed) -> str:
    """The log as sent, one event a line: phase, project, time, weekday, user, event, id."""
    return "\n".join(
        f"{phase} {project} {iso(e.timestamp)} {e.timestamp:%a} {e.distinct_id} {e.event}"
        f" {e.event_id[:8]}"
        for phase, project, e in placed
    )


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def send(
    gw: RunningGateway, events: Sequence[Sent], known: set[str], *, project: str = PROJECT
) -> None:
    """One request; every event stored, or counted as a duplicate of one stored already."""
    batch = [
        {
            "type": "identify" if e.event == "$identify" else "track",
            "event": e.event,
            "distinct_id": e.distinct_id,
            "event_id": e.event_id,
            "timestamp": iso(e.timestamp),
            "properties": e.properties,
        }
        for e in events
    ]
    response = httpx.post(
        gw.url + "/v1/events",
        json={"batch": batch},
        headers={"Authorization": f"Bearer {KEYS[project]}"},
        timeout=30,
    )
    fresh = {e.event_id for e in events} - known
    known |= fresh
    assert response.status_code == 200, response.text
    assert response.json() == {
        "accepted": len(fresh),
        "duplicates": len(events) - len(fresh),
        "rejected": [],
    }


def run_pipeline(gw: RunningGateway, runner: Runner, placed: Placed) -> None:
    """Send phase 1, run the models, compare; send phase 2, run again, compare again."""
    known: set[str] = set()
    sent: dict[str, list[Sent]] = {project: [] for project in KEYS}
    for phase in (1, 2):
        for project, so_far in sent.items():
            events = [e for p, of, e in placed if p == phase and of == project]
            if events:
                send(gw, events, known, project=project)
            so_far.extend(events)
        runner.run()
        for project, so_far in sent.items():
            assert_marts_equal_reference(gw, so_far, project=project)


def empty(gw: RunningGateway, gateway_tables: set[str]) -> None:
    """The database as the gateway made it: its tables emptied, the models' dropped."""
    listed = gw.rows(
        "SELECT name, engine = 'View' FROM system.tables WHERE database = %(db)s",
        db=gw.database,
    )
    for name, _ in sorted(listed, key=lambda row: not row[1]):  # views first
        if name not in gateway_tables:
            gw.clickhouse.command(f"DROP TABLE {gw.database}.{name}")
        elif name != "schema_migrations":
            gw.clickhouse.command(f"TRUNCATE TABLE {gw.database}.{name}")


# -- the comparisons -----------------------------------------------------------------------


def assert_equal(
    gw: RunningGateway,
    table: str,
    expected: Sequence[NamedTuple],
    fields: tuple[str, ...],
    *,
    key: int,
    project: str,
    where: str = "",
) -> None:
    """The table's rows of `project` equal the reference's; the message lists the rows
    that differ, by key (the first `key` fields)."""
    sql = f"SELECT {', '.join(fields)} FROM {{db}}.{table} WHERE project = %(p)s {where}"  # noqa: S608
    got = sorted(gw.rows(sql, p=project))
    want = sorted(tuple(row) for row in expected)
    assert got == want, f"{table}: (SQL, reference) by key:\n" + _differences(got, want, key)


def _differences(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]], key: int) -> str:
    have_by_key = {row[:key]: row for row in got}
    want_by_key = {row[:key]: row for row in want}
    lines = [
        f"  {k}: {have_by_key.get(k)} != {want_by_key.get(k)}"
        for k in sorted(have_by_key.keys() | want_by_key.keys())
        if have_by_key.get(k) != want_by_key.get(k)
    ]
    return "\n".join(lines[:20] + ([f"  … {len(lines) - 20} more"] if len(lines) > 20 else []))


def assert_marts_equal_reference(
    gw: RunningGateway, sent: Sequence[Sent], *, project: str = PROJECT
) -> None:
    stored = gw.rows(
        "SELECT toString(event_id), event, distinct_id, timestamp FROM {db}.events FINAL"
        " WHERE project = %(p)s",
        p=project,
    )
    assert sorted((i, e, u, t.replace(tzinfo=UTC)) for i, e, u, t in stored) == sorted(
        {(e.event_id, e.event, e.distinct_id, e.timestamp) for e in sent}
    )
    metrics = ref.active_users(sent, project=project)
    metrics_fields = ref.MetricsActiveUsersRow._fields
    assert_equal(gw, "metrics_active_users", metrics, metrics_fields, key=2, project=project)
    for granularity, periods in RETENTION:
        cohorts = ref.retention(sent, project=project, granularity=granularity, max_period=periods)
        where = f"AND granularity = '{granularity}'"
        cohort_fields = ref.RetentionRow._fields
        assert_equal(
            gw, "retention_cohorts", cohorts, cohort_fields, key=4, project=project, where=where
        )
    funnel = ref.funnel(
        sent, project=project, name="purchase", steps=STEPS, window=timedelta(days=1)
    )
    assert_equal(gw, "funnel_conversions", funnel, ref.FunnelRow._fields, key=4, project=project)
    daily = ref.daily_events(sent, project=project)
    assert_equal(gw, "agg_daily_events", daily, ref.DailyEventsRow._fields, key=3, project=project)


# -- the test ------------------------------------------------------------------------------


def pipeline(start_gateway: GatewayFactory, tmp_path: Path) -> tuple[RunningGateway, Runner]:
    """A gateway taking both projects' keys, and a Runner on its database."""
    gw = start_gateway(write_keys={key: project for project, key in KEYS.items()})
    lock = FileLock(tmp_path / "models.lock")
    return gw, Runner(gw.clickhouse, ModelConfig(), lock=lock)


def test_generated_logs_through_the_pipeline_equal_the_reference(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw, runner = pipeline(start_gateway, tmp_path)
    gateway_tables = {name for (name,) in gw.rows("SHOW TABLES FROM {db}")}

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(log=logs())
    def pipeline_equals_reference(log: Log) -> None:
        placed = place(log, arrival_time())
        note(describe(placed))
        empty(gw, gateway_tables)
        run_pipeline(gw, runner, placed)

    pipeline_equals_reference()


# -- the minimal logs of what the generated ones found --------------------------------------
#
# metrics_active_users has one row per day of a project, from its first event day to its
# last (reference.py, and the model's first line). Before c824c8f the model wrote a full
# build's rows up to the DATABASE's last day, and an incremental run only the days within
# 29 days after a changed day (and after the database's previous last day), so a day that
# had no row yet and was neither stayed missing.


def day_at(now: datetime, days: int) -> datetime:
    """Noon, `days` days from today (negative: before)."""
    return datetime.combine(now.date(), datetime.min.time(), UTC) + timedelta(days, hours=12)


def event_at(moment: datetime, user: str) -> Sent:
    return Sent(str(uuid.uuid4()), "page_view", user, moment, {})


@pytest.mark.parametrize("days_before", [30, 31])
def test_a_late_event_before_the_first_day_gets_every_day_between(
    start_gateway: GatewayFactory, tmp_path: Path, days_before: int
) -> None:
    """31 days before: the first day's eve had no row (the run rebuilt the late day + 29)."""
    gw, runner = pipeline(start_gateway, tmp_path)
    first, last = day_at(arrival_time(), -10), day_at(arrival_time(), -5)
    late = event_at(first - timedelta(days_before), "u1")
    placed: Placed = [(1, PROJECT, event_at(first, "u0")), (1, PROJECT, event_at(last, "u0"))]

    run_pipeline(gw, runner, [*placed, (2, PROJECT, late)])


def test_a_project_s_days_end_on_its_own_last_day(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Its rows ran on to the neighbour's last day: a project's marts depended on another's."""
    gw, runner = pipeline(start_gateway, tmp_path)
    now = arrival_time()

    run_pipeline(
        gw,
        runner,
        [
            (1, PROJECT, event_at(day_at(now, -10), "u0")),
            (1, OTHER, event_at(day_at(now, -1), "u0")),
        ],
    )


def test_a_project_new_since_the_last_run_gets_every_day(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """The days over 29 after its first day and before the lookback had no row."""
    gw, runner = pipeline(start_gateway, tmp_path)
    now = arrival_time()
    new: Placed = [(2, PROJECT, event_at(day_at(now, days), "u0")) for days in (-40, -1)]

    run_pipeline(gw, runner, [(1, OTHER, event_at(day_at(now, -1), "u0")), *new])
