"""What each kind of data-quality check asks ClickHouse, and what it makes of the answer.

Every check is one function from its declaration (`_config.py`) to a `Finding`: whether
the data breaks it, the observed value, the threshold it was held to, and a few failing
rows as JSON lines. Table and column names were validated when the configuration was
loaded; values are quoted here. Schema drift also keeps its snapshots (`SchemaSnapshots`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ._clickhouse import ClickHouse, millis
from ._config import (
    Accuracy,
    AnyCheck,
    Completeness,
    Consistency,
    Custom,
    Freshness,
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
        f"SELECT toDate({check.column}) AS day, count() FROM {probe.table(check.table)}"  # noqa: S608
        f" WHERE day BETWEEN toDate('{first}') AND toDate('{day}') GROUP BY day"
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
    properties: dict[str, list[str]]  # event name → property keys, sorted


def _snapshot(check: SchemaDrift, probe: Probe) -> Snapshot:
    columns = probe.clickhouse.rows(
        "SELECT name, type FROM system.columns WHERE database = %(db)s AND table = %(table)s",
        {"db": probe.db, "table": check.table},
    )
    properties: dict[str, list[str]] = {}
    if check.properties:
        since = millis(probe.now - timedelta(days=check.properties_days))
        rows = probe.clickhouse.rows(
            "SELECT event, arraySort(groupUniqArrayArray(JSONExtractKeys(properties)))"  # noqa: S608
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
        old, new = set(before.properties.get(event, [])), set(after.properties.get(event, []))
        changes += [f"new property {event}.{k}" for k in sorted(new - old)]
        changes += [f"vanished property {event}.{k}" for k in sorted(old - new)]
    return changes


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
}
