"""Watching the pipeline: the checks after a run with their alerts, and its health.

`Monitor.check()` runs the data-quality checks, sends their alerts through one
`AlertDispatcher` (kept across runs, so its rate limit holds) and records the check run
in the ledger as model `checks` (status `failed` when an error-severity check fails,
`rows` the number of checks).

`pipeline_health()` reads the ledger, `events`, `dq_results` and, optionally, the
gateway's Prometheus `/metrics`; `signals()` holds those numbers to `HealthRules`:

| signal           | fail                                           | warn                   |
|------------------|------------------------------------------------|------------------------|
| model runs       | success rate < `min_success_rate` (0.9)        | no run in the window   |
| last success     | -                                              | never                  |
| events freshness | newest `received_at` older than the SLA (1 h), | -                      |
|                  | or no event at all                             |                        |
| events per day   | yesterday < (1 - `max_drop`) * the day before  | -                      |
| schema changes   | -                                              | any in the window      |
| gateway          | /metrics unreachable, or rejected / received   | forward dead letters,  |
|                  | > `max_rejected_rate` (0.05)                   | or lag > 900 s         |

A model run is a `run_id` of the ledger (other than `checks`); it succeeded when every
row of it is `ok`. The window is the last `days` days, at most the last `runs` runs.
Days are UTC days by `received_at` (arrival at the gateway, which is what the pipeline
controls); "yesterday" is the last complete one. The pipeline is unhealthy when a signal
fails.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import httpx
from clickhouse_connect.driver.exceptions import ClickHouseError
from prometheus_client.parser import text_string_to_metric_families

from ._alerts import AlertDispatcher, CheckOutcome, ClickHouseAlertState
from ._clickhouse import ClickHouse, millis
from ._config import ModelConfig, SchemaDrift
from ._errors import WarehouseUnavailable
from ._ledger import Ledger
from ._quality import failed, run_checks
from ._settings import ModelerSettings

CHECKS = "checks"  # the ledger's model name for a check run

Verdict = Literal["ok", "warn", "fail"]


# ---------------------------------------------------------------- checks after a run


def alert_dispatcher(settings: ModelerSettings, clickhouse: ClickHouse) -> AlertDispatcher:
    """A dispatcher to the configured channels, its state in `alert_state` (created here)."""
    state = ClickHouseAlertState(clickhouse)
    state.create()
    return AlertDispatcher(settings.alert_channels(), state=state)


class Monitor:
    """Runs the checks, alerts on what changed, and records the check run in the ledger."""

    def __init__(
        self, clickhouse: ClickHouse, config: ModelConfig, *, dispatcher: AlertDispatcher
    ) -> None:
        self._ch = clickhouse
        self._config = config
        self.dispatcher = dispatcher
        self._ledger = Ledger(clickhouse)

    def check(self, *, only: Sequence[str] = (), now: datetime | None = None) -> list[CheckOutcome]:
        """The outcomes of the checks (all, or those in `only`); raises only
        `WarehouseUnavailable` (dq_results or the ledger cannot be written)."""
        started, clock = datetime.now(UTC), time.perf_counter()
        outcomes = run_checks(self._ch, self._config, now=now, only=only)
        self.dispatcher.dispatch(outcomes)
        failing = [f"{o.check_name} {o.status}" for o in outcomes if o.status != "pass"]
        try:
            self._ledger.create()
            self._ledger.record(
                run_id=outcomes[0].run_id if outcomes else uuid.uuid4().hex,
                model=CHECKS,
                partition=",".join(only) or "all",
                status="failed" if failed(outcomes) else "ok",
                rows=len(outcomes),
                duration_ms=int((time.perf_counter() - clock) * 1000),
                error=", ".join(failing),
                started_at=started,
            )
        except ClickHouseError as exc:
            raise WarehouseUnavailable(f"model_runs in {self._ch.database}: {exc}") from exc
        return outcomes


# ---------------------------------------------------------------- pipeline health


@dataclass(frozen=True)
class HealthRules:
    """What healthy means (see the module's table)."""

    days: int = 7  # the window of model runs and schema changes
    runs: int = 50  # at most this many of the latest runs in the window
    min_success_rate: float = 0.9
    freshness_sla_seconds: int = 3600
    max_drop: float = 0.5  # of events per day, yesterday against the day before
    max_rejected_rate: float = 0.05
    max_forward_lag_seconds: float = 900  # the oldest stored event not yet in PostHog


@dataclass(frozen=True)
class GatewayTotals:
    """Counters summed over their labels, from the gateway's `/metrics`."""

    received: float = 0.0
    accepted: float = 0.0
    rejected: float = 0.0
    duplicates: float = 0.0
    forward_dead_letters: float = 0.0  # events PostHog refused for good
    forward_lag_seconds: float = 0.0  # the worst project's

    @property
    def rejected_rate(self) -> float:
        return self.rejected / self.received if self.received else 0.0


@dataclass(frozen=True)
class PipelineHealth:
    """The numbers health is judged on, at `now`."""

    now: datetime
    runs: int  # model runs in the window
    failed_runs: int
    last_success: datetime | None  # finished_at of the latest ok model row
    events_age_seconds: float | None  # now - newest received_at (None: no event)
    events_yesterday: int
    events_day_before: int
    schema_changes: int  # changes schema_drift checks found in the window
    gateway: GatewayTotals | None = None
    gateway_error: str = ""  # why /metrics could not be read
    rules: HealthRules = field(default_factory=HealthRules)

    @property
    def success_rate(self) -> float | None:
        return (self.runs - self.failed_runs) / self.runs if self.runs else None

    @property
    def day_over_day(self) -> float | None:
        """Relative change of events per day (None: nothing the day before)."""
        if not self.events_day_before:
            return None
        return (self.events_yesterday - self.events_day_before) / self.events_day_before


@dataclass(frozen=True)
class Signal:
    """One line of the health table."""

    name: str
    value: str
    verdict: Verdict
    rule: str


def pipeline_health(
    clickhouse: ClickHouse,
    config: ModelConfig,
    *,
    rules: HealthRules | None = None,
    metrics_url: str = "",
    now: datetime | None = None,
) -> PipelineHealth:
    """Read the numbers (raises `WarehouseUnavailable` when ClickHouse does not answer)."""
    rules = rules or HealthRules()
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    try:
        runs, failed_runs, last_success = _runs(clickhouse, rules, moment)
        age, yesterday, before = _events(clickhouse, moment)
        changes = _schema_changes(clickhouse, config, rules, moment)
    except ClickHouseError as exc:
        raise WarehouseUnavailable(f"health of {clickhouse.database}: {exc}") from exc
    gateway, error = fetch_gateway_totals(metrics_url) if metrics_url else (None, "")
    return PipelineHealth(
        moment, runs, failed_runs, last_success, age, yesterday, before, changes,
        gateway, error, rules,
    )  # fmt: skip


def _exists(clickhouse: ClickHouse, table: str) -> bool:
    return bool(
        clickhouse.value(
            "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(name)s",
            {"db": clickhouse.database, "name": table},
        )
    )


def _runs(
    clickhouse: ClickHouse, rules: HealthRules, now: datetime
) -> tuple[int, int, datetime | None]:
    if not _exists(clickhouse, "model_runs"):
        return 0, 0, None
    db, since = clickhouse.database, millis(now - timedelta(days=rules.days))
    runs, failures = clickhouse.rows(
        "SELECT count(), countIf(not ok) FROM ("  # noqa: S608
        " SELECT run_id, min(status = 'ok') AS ok, min(started_at) AS started"
        f" FROM {db}.model_runs WHERE model != %(checks)s"
        f" AND started_at >= toDateTime64('{since}', 3, 'UTC')"
        f" AND started_at <= toDateTime64('{millis(now)}', 3, 'UTC')"
        " GROUP BY run_id ORDER BY started DESC LIMIT %(runs)s)",
        {"checks": CHECKS, "runs": rules.runs},
    )[0]
    last = clickhouse.value(
        f"SELECT maxOrNull(finished_at) FROM {db}.model_runs"  # noqa: S608
        " WHERE model != %(checks)s AND status = 'ok'",
        {"checks": CHECKS},
    )
    return int(runs), int(failures), None if last is None else last.replace(tzinfo=UTC)


def _events(clickhouse: ClickHouse, now: datetime) -> tuple[float | None, int, int]:
    yesterday = now.date() - timedelta(days=1)
    count, age, last, before = clickhouse.rows(
        f"SELECT count(), dateDiff('millisecond', max(received_at),"  # noqa: S608
        f" toDateTime64('{millis(now)}', 3, 'UTC')) / 1000,"
        f" countIf(toDate(received_at) = toDate('{yesterday}')),"
        f" countIf(toDate(received_at) = toDate('{yesterday - timedelta(days=1)}'))"
        f" FROM {clickhouse.database}.events"
    )[0]
    return (float(age) if count else None), int(last), int(before)


def _schema_changes(
    clickhouse: ClickHouse, config: ModelConfig, rules: HealthRules, now: datetime
) -> int:
    names = [c.name for c in config.checks if isinstance(c, SchemaDrift)]
    if not names or not _exists(clickhouse, "dq_results"):
        return 0
    since = millis(now - timedelta(days=rules.days))
    found = clickhouse.value(
        f"SELECT sum(ifNull(observed, 0)) FROM {clickhouse.database}.dq_results"  # noqa: S608
        f" WHERE check_name IN %(names)s AND checked_at >= toDateTime64('{since}', 3, 'UTC')"
        f" AND checked_at <= toDateTime64('{millis(now)}', 3, 'UTC')",
        {"names": names},
    )
    return int(found or 0)


# ---------------------------------------------------------------- the gateway's metrics

_COUNTERS = {
    "headwater_events_received": "received",
    "headwater_events_accepted": "accepted",
    "headwater_events_rejected": "rejected",
    "headwater_events_duplicate": "duplicates",
    "headwater_forward_dead_letters": "forward_dead_letters",
}
_WORST_GAUGES = {"headwater_forward_lag_seconds": "forward_lag_seconds"}


def gateway_totals(text: str) -> GatewayTotals:
    """The counters of a Prometheus text exposition, each summed over its labels, and the
    worst value of its lag gauges (raises `ValueError` for text that is not one)."""
    totals = dict.fromkeys([*_COUNTERS.values(), *_WORST_GAUGES.values()], 0.0)
    for family in text_string_to_metric_families(text):
        name = family.name.removesuffix("_total")
        if name in _COUNTERS:
            totals[_COUNTERS[name]] += sum(
                s.value for s in family.samples if s.name.endswith("_total")
            )
        elif name in _WORST_GAUGES:
            totals[_WORST_GAUGES[name]] = max([0.0, *(s.value for s in family.samples)])
    return GatewayTotals(**totals)


def fetch_gateway_totals(url: str, *, timeout: float = 5.0) -> tuple[GatewayTotals | None, str]:
    """The gateway's totals, or None and why they could not be read."""
    try:
        response = httpx.get(url, timeout=timeout)
        response.raise_for_status()
        return gateway_totals(response.text), ""
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    except ValueError as exc:
        return None, f"not a Prometheus exposition: {exc}"


# ---------------------------------------------------------------- the verdicts


def _ago(seconds: float) -> str:
    return f"{seconds:,.0f} s ago"


def signals(health: PipelineHealth) -> list[Signal]:
    """The health table: each number held to its rule."""
    return [
        _run_signal(health),
        _last_success_signal(health),
        _freshness_signal(health),
        _volume_signal(health),
        _schema_signal(health),
        *_gateway_signals(health),
    ]


def healthy(found: Sequence[Signal]) -> bool:
    """No signal fails (what makes `headwater health` exit 0)."""
    return all(s.verdict != "fail" for s in found)


def _run_signal(h: PipelineHealth) -> Signal:
    r = h.rules
    rule = f"success rate >= {r.min_success_rate:.0%} over {r.days} days (<= {r.runs} runs)"
    rate = h.success_rate
    if rate is None:
        return Signal("model runs", "no run", "warn", rule)
    verdict: Verdict = "ok" if rate >= r.min_success_rate else "fail"
    value = f"{rate:.1%} ({h.runs - h.failed_runs} of {h.runs} ok)"
    return Signal("model runs", value, verdict, rule)


def _last_success_signal(h: PipelineHealth) -> Signal:
    if h.last_success is None:
        return Signal("last successful run", "never", "warn", "informational")
    age = (h.now - h.last_success).total_seconds()
    value = f"{h.last_success:%Y-%m-%d %H:%M:%S} UTC ({_ago(age)})"
    return Signal("last successful run", value, "ok", "informational")


def _freshness_signal(h: PipelineHealth) -> Signal:
    rule = f"newest event received <= {h.rules.freshness_sla_seconds:,} s ago"
    if h.events_age_seconds is None:
        return Signal("events freshness", "no event", "fail", rule)
    late = h.events_age_seconds > h.rules.freshness_sla_seconds
    return Signal("events freshness", _ago(h.events_age_seconds), "fail" if late else "ok", rule)


def _volume_signal(h: PipelineHealth) -> Signal:
    rule = f"yesterday >= {1 - h.rules.max_drop:.0%} of the day before"
    change = h.day_over_day
    value = f"{h.events_yesterday:,} vs {h.events_day_before:,}"
    if change is None:
        return Signal("events per day", value, "ok", rule)
    verdict: Verdict = "fail" if change < -h.rules.max_drop else "ok"
    return Signal("events per day", f"{value} ({change:+.1%})", verdict, rule)


def _schema_signal(h: PipelineHealth) -> Signal:
    verdict: Verdict = "warn" if h.schema_changes else "ok"
    rule = f"schema_drift checks, last {h.rules.days} days"
    return Signal("schema changes", str(h.schema_changes), verdict, rule)


def _gateway_signals(h: PipelineHealth) -> list[Signal]:
    if h.gateway_error:
        return [Signal("gateway", h.gateway_error, "fail", "/metrics answers")]
    g = h.gateway
    if g is None:
        return []
    limit = h.rules.max_rejected_rate
    events = (
        f"{g.accepted:,.0f} accepted, {g.rejected:,.0f} rejected,"
        f" {g.duplicates:,.0f} duplicates ({g.rejected_rate:.1%} rejected)"
    )
    rejected: Verdict = "fail" if g.rejected_rate > limit else "ok"
    most = h.rules.max_forward_lag_seconds
    late = g.forward_lag_seconds > most
    forwarded: Verdict = "warn" if g.forward_dead_letters or late else "ok"
    lag = g.forward_lag_seconds
    forwarding = f"{g.forward_dead_letters:,.0f} dead letters, {lag:,.0f} s behind"
    return [
        Signal("gateway events", events, rejected, f"rejected <= {limit:.0%} of received"),
        Signal(
            "gateway forwarding", forwarding, forwarded, f"no dead letter, <= {most:,.0f} s behind"
        ),
    ]
