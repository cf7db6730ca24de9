"""What each kind of data-quality check asks ClickHouse, and what it makes of the answer.

Every check is one function from its declaration (`_config.py`) to a `Finding`: whether
the data breaks it, the observed value, the threshold it was held to, and a few failing
rows as JSON lines. Table and column names were validated when the configuration was
loaded; values are quoted here. Schema drift also keeps its snapshots (`dq_schema_snapshots`);
PostgreSQL consistency asks the application database too, through psycopg.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ._clickhouse import ClickHouse, millis
from ._config import (
    Accuracy,
    AnyCheck,
    Completeness,
    Consistency,
    Custom,
    Distribution,
    Freshness,
    PostgresConsistency,
    SchemaDrift,
    Uniqueness,
    Volume,
)
from ._models import quote

SAMPLE_ROWS = 5


@dataclass(frozen=True)
class Finding:
    """What one check found: `broken` turns into `warn` or `fail` by the check's severity."""

    broken: bool
    observed: float | None
    threshold: str
    details: str
    sample: list[str] = field(default_factory=list)  # failing rows, one JSON object each


@dataclass(frozen=True)
class Probe:
    """Where and when checks run."""

    clickhouse: ClickHouse
    now: datetime  # UTC
    run_id: str
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)  # for `dsn_env`

    @property
    def db(self) -> str:
        return self.clickhouse.database

    def table(self, name: str) -> str:
        return f"{self.db}.{name}"

    @property
    def now_sql(self) -> str:
        return f"toDateTime64('{millis(self.now)}', 3, 'UTC')"


def evaluate(check: AnyCheck, probe: Probe) -> Finding:
    """Run `check`; ClickHouse errors propagate (the caller records them as failures)."""
    evaluator: Callable[[Any, Probe], Finding] = _EVALUATORS[type(check)]
    return evaluator(check, probe)


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _failing_rows(probe: Probe, select: str) -> tuple[int, list[str]]:
    """How many rows `select` returns, and the first few as JSON objects (one query)."""
    rows = probe.clickhouse.rows(
        f"SELECT count() OVER (), formatRow('JSONEachRow', *) FROM ({select}) AS failing"  # noqa: S608
        f" LIMIT {SAMPLE_ROWS}"
    )
    return (int(rows[0][0]) if rows else 0), [str(r[1]).strip() for r in rows]


def freshness(check: Freshness, probe: Probe) -> Finding:
    count, age = probe.clickhouse.rows(
        f"SELECT count(), dateDiff('second', max({check.column}), {probe.now_sql})"  # noqa: S608
        f" FROM {probe.table(check.table)}"
    )[0]
    threshold = f"age <= {check.max_age_seconds} s"
    if not count:
        return Finding(True, None, threshold, f"{check.table} has no rows")
    return Finding(
        age > check.max_age_seconds,
        float(age),
        threshold,
        f"newest {check.column} is {age} s old at {millis(probe.now)} UTC",
    )


def _empty(column: str) -> str:
    return f"isNull({column}) OR empty(toString({column}))"


def completeness(check: Completeness, probe: Probe) -> Finding:
    counts = ", ".join(f"countIf({_empty(c)})" for c in check.columns)
    total, *empties = probe.clickhouse.rows(
        f"SELECT count(), {counts} FROM {probe.table(check.table)}"  # noqa: S608
    )[0]
    rates = [_rate(int(e), int(total)) for e in empties]
    worst = max(rates)
    details = ", ".join(
        f"{c}: {e} of {total} null or empty" for c, e in zip(check.columns, empties, strict=True)
    )
    broken = worst > check.max_null_rate
    sample: list[str] = []
    if broken:
        where = " OR ".join(f"({_empty(c)})" for c in check.columns)
        table = probe.table(check.table)
        _, sample = _failing_rows(probe, f"SELECT * FROM {table} WHERE {where}")  # noqa: S608
    return Finding(broken, worst, f"null rate <= {check.max_null_rate}", details, sample)


def uniqueness(check: Uniqueness, probe: Probe) -> Finding:
    key = ", ".join(check.key)
    total, distinct = probe.clickhouse.rows(
        f"SELECT count(), uniqExact({key}) FROM {probe.table(check.table)}"  # noqa: S608
    )[0]
    duplicates = int(total) - int(distinct)
    rate = _rate(duplicates, int(total))
    broken = rate > check.max_duplicate_rate
    sample: list[str] = []
    if broken:
        _, sample = _failing_rows(
            probe,
            f"SELECT {key}, count() AS copies FROM {probe.table(check.table)}"  # noqa: S608
            f" GROUP BY {key} HAVING copies > 1",
        )
    return Finding(
        broken,
        rate,
        f"duplicate rate <= {check.max_duplicate_rate}",
        f"{duplicates} duplicate rows of {total} by ({key})",
        sample,
    )


def _accepted(check: Accuracy) -> tuple[str, str]:
    """The condition a good value meets, in SQL and in words."""
    column, sql, words = check.column, [], []
    if check.min is not None:
        sql.append(f"{column} >= {check.min!r}")
        words.append(f"{column} >= {check.min:g}")
    if check.max is not None:
        sql.append(f"{column} <= {check.max!r}")
        words.append(f"{column} <= {check.max:g}")
    if check.accepted is not None:
        values = ", ".join(quote(v) for v in check.accepted)
        sql.append(f"toString({column}) IN ({values})")
        words.append(f"{column} in ({values})")
    return " AND ".join(sql) or "1", " and ".join(words) or "any value"


def accuracy(check: Accuracy, probe: Probe) -> Finding:
    good, words = _accepted(check)
    offending, sample = _failing_rows(
        probe,
        f"SELECT * FROM {probe.table(check.table)}"  # noqa: S608
        f" WHERE isNotNull({check.column}) AND NOT ({good})",
    )
    return Finding(
        offending > check.max_offending,
        float(offending),
        f"{words} (at most {check.max_offending} offending rows)",
        f"{offending} rows of {check.table} outside {words}",
        sample,
    )


def _side(table: str, value: str, where: str, group_by: str) -> str:
    return (
        f"SELECT {group_by or '0'} AS key, toFloat64({value}) AS value FROM {table}"  # noqa: S608
        f" {f'WHERE {where}' if where else ''} GROUP BY key"
    )


def consistency(check: Consistency, probe: Probe) -> Finding:
    left = _side(probe.table(check.table), check.value, check.where, check.group_by)
    right = _side(
        probe.table(check.other_table), check.other_value, check.other_where, check.other_group_by
    )
    rows = probe.clickhouse.rows(
        "SELECT toString(key), l.value, r.value"  # noqa: S608
        f" FROM ({left}) AS l FULL OUTER JOIN ({right}) AS r USING key ORDER BY key"
    )
    differences = [
        (key, mine, theirs, abs(mine - theirs) / max(abs(theirs), 1.0))
        for key, mine, theirs in rows
    ]
    worst = max((d[3] for d in differences), default=0.0)
    off = [d for d in differences if d[3] > check.tolerance]
    sample = [json.dumps({"key": k, check.table: m, check.other_table: t}) for k, m, t, _ in off][
        :SAMPLE_ROWS
    ]
    return Finding(
        bool(off),
        worst,
        f"relative difference <= {check.tolerance}",
        f"{len(off)} of {len(differences)} groups differ: {check.table} {check.value}"
        f" vs {check.other_table} {check.other_value}",
        sample,
    )


def volume(check: Volume, probe: Probe) -> Finding:
    # The last complete UTC day: today's count is partial until midnight.
    day = probe.now.astimezone(UTC).date() - timedelta(days=1)
    first = day - timedelta(days=check.training_days)
    rows = probe.clickhouse.rows(
        f"SELECT toDate32({check.column}) AS day, count() FROM {probe.table(check.table)}"  # noqa: S608
        f" WHERE day BETWEEN toDate32('{first}') AND toDate32('{day}') GROUP BY day"
    )
    counts: dict[date, int] = {d: int(n) for d, n in rows}
    training = [
        counts.get(first + timedelta(days=n), 0)
        for n in range(check.training_days)
        if check.seasonality == "none" or (first + timedelta(days=n)).weekday() == day.weekday()
    ]
    observed = counts.get(day, 0)
    threshold = f"|z| <= {check.max_z} or change <= {check.min_change:.0%}"
    if len(training) < max(check.min_training, 2):
        return Finding(False, None, threshold, f"{day}: {observed} rows, too little history")
    mean = statistics.fmean(training)
    # Counts are whole rows: a spread under one row is no spread, and z stays finite.
    spread = max(statistics.stdev(training), 1.0)
    z = (observed - mean) / spread
    change = abs(observed - mean) / mean if mean else math.inf
    return Finding(
        abs(z) > check.max_z and change > check.min_change,
        z,
        threshold,
        f"{day}: {observed} rows; {len(training)} training days, mean {mean:.1f},"
        f" stdev {spread:.1f}, change {change:.0%}",
    )


def custom(check: Custom, probe: Probe) -> Finding:
    failing, sample = _failing_rows(probe, check.sql.replace("{db}", probe.db))
    return Finding(
        failing > 0, float(failing), "no rows", f"the query returned {failing} rows", sample
    )


# ---------------------------------------------------------------- distribution


def _last_day(probe: Probe) -> date:
    # The last complete UTC day: today's rows are partial until midnight.
    return probe.now.astimezone(UTC).date() - timedelta(days=1)


def _rows_of_window(check: Distribution, probe: Probe, day: date, extra: str = "") -> str:
    """FROM and WHERE for the rows of `day` and its training days (aliases are `dq_` so
    that they never shadow a column of the table)."""
    first = day - timedelta(days=check.training_days)
    conditions = [
        f"toDate32({check.time_column}) BETWEEN toDate32('{first}') AND toDate32('{day}')",
        *(f"({c})" for c in (check.where, extra) if c),
    ]
    return f"FROM {probe.table(check.table)} WHERE {' AND '.join(conditions)}"


def _unknown(check: Distribution, day: date, seen: bool, training_days: int) -> str | None:
    """Why `day` cannot be judged (no rows, too little history), or None when it can."""
    if not seen:
        return f"{day}: no rows to compare"
    if training_days < max(check.min_training, 2):
        return f"{day}: {training_days} training days, too few"
    return None


def _statistic_name(q: float) -> str:
    return f"p{q * 100:g}"


def _z(observed: float, training: list[float]) -> tuple[float, float, float]:
    """z-score, training mean and spread; a flat training series makes any move infinite."""
    mean, spread = statistics.fmean(training), statistics.stdev(training)
    if spread:
        return (observed - mean) / spread, mean, spread
    return (0.0 if observed == mean else math.copysign(math.inf, observed - mean)), mean, spread


def _numeric(check: Distribution, probe: Probe) -> Finding:
    day, value = _last_day(probe), f"toFloat64({check.expression})"
    names = ["mean", *(_statistic_name(q) for q in check.quantiles)]
    aggregates = ", ".join(
        [f"avg({value})", *(f"quantile({q!r})({value})" for q in check.quantiles)]
    )
    rows = probe.clickhouse.rows(
        f"SELECT toDate32({check.time_column}) AS dq_day, {aggregates}"
        f" {_rows_of_window(check, probe, day, f'isNotNull({check.expression})')} GROUP BY dq_day"
    )
    daily = {d: [float(v) for v in values] for d, *values in rows}
    threshold = f"|z| <= {check.max_z} or change <= {check.min_change:.0%}"
    training = [values for d, values in daily.items() if d != day]
    if (unknown := _unknown(check, day, day in daily, len(training))) is not None:
        return Finding(False, None, threshold, unknown)
    shifts, broken, worst = [], False, 0.0
    for n, name in enumerate(names):
        observed = daily[day][n]
        z, mean, spread = _z(observed, [values[n] for values in training])
        change = abs(observed - mean) / abs(mean) if mean else math.inf
        broken = broken or (abs(z) > check.max_z and change > check.min_change)
        worst = z if abs(z) > abs(worst) else worst
        shifts.append(f"{name} {observed:g} (training {mean:g} ± {spread:g}, z {z:.2f},"
                      f" change {change:.0%})")  # fmt: skip
    details = f"{day}, {len(training)} training days: " + "; ".join(shifts)
    return Finding(broken, worst, threshold, details)


def _categorical(check: Distribution, probe: Probe) -> Finding:
    day = _last_day(probe)
    rows = probe.clickhouse.rows(
        f"WITH counted AS (SELECT toDate32({check.time_column}) AS dq_day,"  # noqa: S608
        f" toString({check.expression}) AS dq_value, count() AS n"
        f" {_rows_of_window(check, probe, day)} GROUP BY dq_day, dq_value),"
        " shares AS (SELECT dq_day, dq_value, n / sum(n) OVER (PARTITION BY dq_day) AS share"
        " FROM counted),"
        f" summed AS (SELECT dq_value, sumIf(share, dq_day = toDate32('{day}')) AS latest,"
        f" sumIf(share, dq_day < toDate32('{day}')) AS trained FROM shares GROUP BY dq_value)"
        " SELECT dq_value, latest, trained, latest_rank, trained_rank,"
        f" (SELECT uniqExact(dq_day) FROM counted WHERE dq_day < toDate32('{day}'))"
        " FROM (SELECT *, if(latest > 0, row_number() OVER (ORDER BY latest DESC, dq_value), 0)"
        " AS latest_rank, if(trained > 0, row_number() OVER (ORDER BY trained DESC, dq_value), 0)"
        f" AS trained_rank FROM summed) WHERE latest_rank BETWEEN 1 AND {check.top}"
        f" OR trained_rank BETWEEN 1 AND {check.top} ORDER BY dq_value"
    )
    threshold = f"share change <= {check.max_share_change} and no new value in the top {check.top}"
    days = int(rows[0][5]) if rows else 0
    seen = any(latest for _, latest, *_ in rows)
    if (unknown := _unknown(check, day, seen, days)) is not None:
        return Finding(False, None, threshold, unknown)
    return _share_finding(check, day, days, rows, threshold)


def _share_finding(
    check: Distribution, day: date, days: int, rows: list[tuple[Any, ...]], threshold: str
) -> Finding:
    """Each top value's share on `day` against its average daily share in training."""
    top = [
        (str(value), float(latest), float(trained) / days, 0 < latest_rank <= check.top,
         0 < trained_rank <= check.top)
        for value, latest, trained, latest_rank, trained_rank, _ in rows
    ]  # fmt: skip
    new = [v for v, _, _, latest, trained in top if latest and not trained]
    moved = [t for t in top if abs(t[1] - t[2]) > check.max_share_change]
    worst = max(abs(share - usual) for _, share, usual, _, _ in top)
    words = [f"new in the top {check.top}: {', '.join(new)}"] if new else []
    words += [f"{v} {share:.1%} (training {usual:.1%})" for v, share, usual, _, _ in moved]
    sample = [
        json.dumps({"value": v, "share": round(share, 6), "training_share": round(usual, 6)})
        for v, share, usual, _, _ in top
        if v in new or abs(share - usual) > check.max_share_change
    ][:SAMPLE_ROWS]
    details = f"{day}, {days} training days: " + ("; ".join(words) or f"largest change {worst:.1%}")
    return Finding(bool(new or moved), worst, threshold, details, sample)


def distribution(check: Distribution, probe: Probe) -> Finding:
    return _categorical(check, probe) if check.categorical else _numeric(check, probe)


# ---------------------------------------------------------------- postgres consistency


def _postgres_number(dsn: str, sql: str, timeout_seconds: int) -> float:
    """The one number `sql` returns, read in a read-only transaction; psycopg errors and
    an answer that is not one number propagate (psycopg.Error, ValueError)."""
    with psycopg.connect(dsn, connect_timeout=timeout_seconds) as connection:
        connection.read_only = True
        connection.execute(
            "SELECT set_config('statement_timeout', %s, true)", (f"{timeout_seconds}s",)
        )
        cursor = connection.execute(sql.encode())
        rows = cursor.fetchall()
        connection.rollback()
    if len(rows) != 1 or len(rows[0]) != 1 or rows[0][0] is None:
        raise ValueError(f"the query must return one number, it returned {rows[:2]!r}")
    try:
        return float(rows[0][0])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the query must return one number, it returned {rows[0][0]!r}") from exc


def _server(dsn: str) -> str:
    """Where `dsn` points, without its password (for details and logs)."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparsable DSN)"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def postgres_consistency(check: PostgresConsistency, probe: Probe) -> Finding:
    threshold = f"relative difference <= {check.tolerance}"
    dsn = check.dsn or probe.environ.get(check.dsn_env, "")
    if not dsn:
        return Finding(True, None, threshold, f"no PostgreSQL DSN: {check.dsn_env} is not set")
    try:
        theirs = _postgres_number(dsn, check.postgres_sql, check.timeout_seconds)
    except (psycopg.Error, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
        return Finding(True, None, threshold, f"PostgreSQL {_server(dsn)} did not answer: {reason}")
    where = f" WHERE {check.where}" if check.where else ""
    mine = float(
        probe.clickhouse.rows(
            f"SELECT toFloat64({check.value}) FROM {probe.table(check.table)}{where}"  # noqa: S608
        )[0][0]
    )
    difference = abs(mine - theirs) / max(abs(theirs), 1.0)
    return Finding(
        difference > check.tolerance,
        difference,
        threshold,
        f"{check.table} {check.value} = {mine:g} vs PostgreSQL {theirs:g}",
        [json.dumps({"clickhouse": mine, "postgres": theirs})],
    )


# ---------------------------------------------------------------- schema drift

SNAPSHOTS = """
CREATE TABLE IF NOT EXISTS {db}.dq_schema_snapshots (
    check_name String,
    table_name String,
    run_id String,
    taken_at DateTime64(3, 'UTC'),
    columns String,
    properties String
) ENGINE = MergeTree ORDER BY (check_name, taken_at)
"""


@dataclass(frozen=True)
class Snapshot:
    columns: dict[str, str]  # column → type
    properties: dict[str, list[str]]  # event name → "key:JSONType" of its properties, sorted


def _snapshot(check: SchemaDrift, probe: Probe) -> Snapshot:
    columns = probe.clickhouse.rows(
        "SELECT name, type FROM system.columns WHERE database = %(db)s AND table = %(table)s",
        {"db": probe.db, "table": check.table},
    )
    properties: dict[str, list[str]] = {}
    if check.properties:
        since = millis(probe.now - timedelta(days=check.properties_days))
        rows = probe.clickhouse.rows(
            "SELECT event, arraySort(groupUniqArrayArray(arrayMap("  # noqa: S608
            " k -> concat(k, ':', toString(JSONType(properties, k))),"
            " JSONExtractKeys(properties))))"
            f" FROM {probe.table(check.table)} WHERE timestamp >= toDateTime64('{since}', 3, 'UTC')"
            f" AND timestamp < {probe.now_sql} GROUP BY event"
        )
        properties = {str(event): list(keys) for event, keys in rows}
    return Snapshot({str(n): str(t) for n, t in columns}, properties)


def _previous(check: SchemaDrift, probe: Probe) -> Snapshot | None:
    rows = probe.clickhouse.rows(
        f"SELECT columns, properties FROM {probe.table('dq_schema_snapshots')}"  # noqa: S608
        " WHERE check_name = %(check)s ORDER BY taken_at DESC LIMIT 1",
        {"check": check.name},
    )
    if not rows:
        return None
    return Snapshot(json.loads(rows[0][0]), json.loads(rows[0][1]))


def _drift(before: Snapshot, after: Snapshot) -> list[str]:
    changes = [f"new column {c} {t}" for c, t in after.columns.items() if c not in before.columns]
    changes += [f"removed column {c}" for c in before.columns if c not in after.columns]
    changes += [
        f"retyped column {c}: {before.columns[c]} -> {t}"
        for c, t in after.columns.items()
        if c in before.columns and before.columns[c] != t
    ]
    for event in sorted(before.properties.keys() | after.properties.keys()):
        old, new = _typed(before.properties.get(event, [])), _typed(after.properties.get(event, []))
        changes += [
            f"new property {event}.{k} {_types(new[k])}" for k in sorted(new.keys() - old.keys())
        ]
        changes += [f"vanished property {event}.{k}" for k in sorted(old.keys() - new.keys())]
        changes += [
            f"retyped property {event}.{k}: {_types(old[k])} -> {_types(new[k])}"
            for k in sorted(old.keys() & new.keys())
            if old[k] != new[k]
        ]
    return changes


def _typed(entries: list[str]) -> dict[str, set[str]]:
    """{key: its JSON types} from "key:Type" entries (a snapshot without types: no type)."""
    typed: dict[str, set[str]] = {}
    for entry in entries:
        key, _, kind = entry.rpartition(":") if ":" in entry else (entry, "", "")
        typed.setdefault(key, set()).add(kind)
    return typed


def _types(kinds: set[str]) -> str:
    return "|".join(sorted(k for k in kinds if k)) or "?"


def schema_drift(check: SchemaDrift, probe: Probe) -> Finding:
    probe.clickhouse.command(SNAPSHOTS.format(db=probe.db))
    before, after = _previous(check, probe), _snapshot(check, probe)
    probe.clickhouse.command(
        f"INSERT INTO {probe.table('dq_schema_snapshots')}"  # noqa: S608
        " (check_name, table_name, run_id, taken_at, columns, properties) VALUES"
        f" (%(check)s, %(table)s, %(run)s, {probe.now_sql}, %(columns)s, %(properties)s)",
        {
            "check": check.name,
            "table": check.table,
            "run": probe.run_id,
            "columns": json.dumps(after.columns),
            "properties": json.dumps(after.properties),
        },
    )
    if before is None:
        return Finding(False, 0.0, "no change", "first snapshot taken")
    changes = _drift(before, after)
    sample = [json.dumps({"change": c}) for c in changes[:SAMPLE_ROWS]]
    details = "; ".join(changes) or "no change since the last snapshot"
    return Finding(bool(changes), float(len(changes)), "no change", details, sample)


_EVALUATORS: dict[type, Callable[[Any, Probe], Finding]] = {
    Freshness: freshness,
    Completeness: completeness,
    Uniqueness: uniqueness,
    Accuracy: accuracy,
    Consistency: consistency,
    Volume: volume,
    SchemaDrift: schema_drift,
    Custom: custom,
    Distribution: distribution,
    PostgresConsistency: postgres_consistency,
}
