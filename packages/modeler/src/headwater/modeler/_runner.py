"""Running the models: incremental, idempotent, one run at a time.

A run reads which days gained events since the last run (the `inserted_at` watermark) and
asks each model which of its key days that touches. It recomputes those days into a
staging table, carries over the other days of the partitions (months, or years) they fall
in, and swaps those in (`REPLACE PARTITION`; `DROP PARTITION` for one now empty); a model rebuilt
over its whole key range, and the whole tables (dim_date, dim_users), are exchanged
atomically instead. A failure leaves every table as the last good run wrote it, drops its
staging tables, and does not move the watermark, so the next run does the work again.

Nothing here grows with the span of days: days travel as ranges (at most `MAX_RANGES` a
model; more are merged across their smallest gaps, which only rebuilds more), and the
partitions swapped are those that exist.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from clickhouse_connect.driver.exceptions import ClickHouseError

from ._clickhouse import ClickHouse, millis
from ._config import ModelConfig
from ._errors import ConfigError, ModelFailed
from ._ledger import Ledger
from ._lock import RunLock
from ._models import MODELS, Build, Days, Model, Span, events_between, sql_file

logger = logging.getLogger("headwater.modeler")

Progress = Callable[[str, int, int], None]  # (model, models done, models in all)

MAX_RANGES = 16  # day ranges a model recomputes in one run, at most
# one INSERT may fill every partition of a rebuild (ClickHouse's default allows 100)
INSERT_SETTINGS: dict[str, Any] = {"max_partitions_per_insert_block": 0}


@dataclass
class ModelResult:
    model: str
    partitions: int
    rows: int
    seconds: float


@dataclass
class Staged:
    """A model's rows built into its staging table, waiting to be swapped in."""

    model: Model
    staging: str
    ranges: list[Days] = field(default_factory=list)  # the key days recomputed
    whole: bool = False  # the staging table holds the whole model: exchanged
    periods: list[Days] = field(default_factory=list)  # the partitions swapped, as days
    replace: list[str] = field(default_factory=list)  # partitions to take from staging
    drop: list[str] = field(default_factory=list)  # partitions to drop from the table
    rows: int = 0
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    clock: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        if self.model.partitioning == "whole":
            return "all"
        if self.ranges:
            return f"{self.ranges[0][0]}..{self.ranges[-1][1]}"
        return f"dropped {len(self.drop)}" if self.drop else ""

    def result(self) -> ModelResult:
        partitions = 1 if self.whole else len(self.replace) + len(self.drop)
        return ModelResult(self.model.name, partitions, self.rows, self.seconds)


class Bounds(NamedTuple):
    """A project's first and last event day, and theirs among the events modeled before
    (None: none), and whether it gained events since."""

    first: date
    last: date
    previous: tuple[date, date] | None
    gained: bool

    def extended(self) -> list[Days]:
        """The days it spans now and did not span before."""
        if self.previous is None:
            return [(self.first, self.last)]
        before, until = self.previous
        earlier = [(self.first, before - timedelta(days=1))] if self.first < before else []
        later = [(until + timedelta(days=1), self.last)] if self.last > until else []
        return earlier + later


@dataclass
class RunReport:
    """What one run did."""

    run_id: str
    span: Span | None
    results: list[ModelResult] = field(default_factory=list)

    @property
    def skipped(self) -> bool:
        """True when no event had arrived since the last run."""
        return self.span is None


def merge_ranges(ranges: Iterable[Days], *, at_most: int = MAX_RANGES) -> list[Days]:
    """Sorted, disjoint ranges covering `ranges` (touching ones joined), at most `at_most`:
    beyond that, the two closest are joined (which covers more days, never fewer)."""
    merged: list[Days] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + timedelta(days=1):
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    while len(merged) > at_most:
        gaps = [(merged[i + 1][0] - merged[i][1], i) for i in range(len(merged) - 1)]
        _, i = min(gaps)
        merged[i : i + 2] = [(merged[i][0], merged[i + 1][1])]
    return merged


def clip(ranges: Iterable[Days], first: date, last: date) -> list[Days]:
    """The parts of `ranges` within `first..last`."""
    return [(max(a, first), min(b, last)) for a, b in ranges if a <= last and b >= first]


def _in_ranges(column: str, ranges: Sequence[Days]) -> str:
    """A SQL condition: `column` lies in one of `ranges` (of Date32 days)."""
    terms = [f"{column} BETWEEN toDate32('{a}') AND toDate32('{b}')" for a, b in ranges]
    return "(" + " OR ".join(terms or ["0"]) + ")"


class Runner:
    """Runs the models of one ClickHouse database."""

    def __init__(
        self,
        clickhouse: ClickHouse,
        config: ModelConfig,
        *,
        lock: RunLock,
        models: Sequence[Model] = MODELS,
    ) -> None:
        self._models = tuple(models)
        self._ch = clickhouse
        self._db = clickhouse.database
        self._config = config
        self._lock = lock
        self.ledger = Ledger(clickhouse)

    def run(
        self,
        *,
        full: bool = False,
        since: date | None = None,
        until: date | None = None,
        progress: Progress | None = None,
    ) -> RunReport:
        """Bring every model up to date (or rebuild `since..until`, or everything)."""
        if since is not None and until is not None and since > until:
            raise ConfigError(
                f"the range {since}..{until} is reversed: its first day is after its last"
            )
        run_id = uuid.uuid4().hex[:16]
        with self._lock:
            self.ledger.create()
            self._drop_orphans()
            snapshot = self._ch.value(f"SELECT max(inserted_at) FROM {self._db}.events")  # noqa: S608
            span = self._span(snapshot, full=full, since=since, until=until)
            report = RunReport(run_id, span)
            if span is None:
                return report
            self._views()
            report.results = self._build_all(span, run_id, progress)
            self._reading_views()
            if since is None and until is None:
                self.ledger.advance(snapshot)
            return report

    # -- what changed ----------------------------------------------------------

    def _span(
        self, snapshot: datetime | None, *, full: bool, since: date | None, until: date | None
    ) -> Span | None:
        watermark = None if full or since or until else self.ledger.watermark()
        projects = self._projects(watermark, snapshot)
        if snapshot is None or not projects:
            return None
        first = min(p.first for p in projects)
        last = max(p.last for p in projects)
        if since is not None or until is not None or watermark is None:
            low, high = max(first, since or first), min(last, until or last)
            return Span(first, last, ((low, high),), identified_from=low) if low <= high else None
        changed = self._changed(watermark, snapshot)
        if not changed:
            return None
        days = [(day, day) for day, _ in changed]
        if lookback := self._config.lookback_days:  # the trailing days, for late events
            days.append((last - timedelta(days=lookback - 1), last))
        ranges = merge_ranges(days, at_most=len(days))  # exact: the runner caps per model
        identified = [day for day, is_identify in changed if is_identify]
        gained = [p for p in projects if p.gained]
        reopened = [p.previous[1] for p in gained if p.previous is not None]
        return Span(
            first,
            last,
            tuple(clip(ranges, first, last)),
            identified_from=min(identified) if identified else None,
            extended=tuple(
                merge_ranges((r for p in gained for r in p.extended()), at_most=2 * len(gained) + 1)
            ),
            reopened_from=min(reopened) if reopened else None,
        )

    def _projects(self, watermark: datetime | None, snapshot: datetime | None) -> list[Bounds]:
        """Each project's days: now, and among the events modeled before."""
        since = "toDateTime64(%(w)s, 3, 'UTC')"
        rows = self._ch.rows(
            "SELECT min(toDate32(timestamp)), max(toDate32(timestamp)),"  # noqa: S608
            f" minIfOrNull(toDate32(timestamp), inserted_at <= {since}),"
            f" maxIfOrNull(toDate32(timestamp), inserted_at <= {since}),"
            f" countIf(inserted_at > {since} AND inserted_at <= toDateTime64(%(s)s, 3, 'UTC')) > 0"
            f" FROM {self._db}.events GROUP BY project",
            {
                "w": millis(watermark) if watermark else "1900-01-01 00:00:00.000",
                "s": millis(snapshot) if snapshot else "1900-01-01 00:00:00.000",
            },
        )
        return [
            Bounds(first, last, None if before is None else (before, until), bool(gained))
            for first, last, before, until, gained in rows
        ]

    def _changed(self, watermark: datetime, snapshot: datetime) -> list[tuple[date, bool]]:
        """The days of the events that arrived since the watermark, and whether an
        `$identify` is among them."""
        return [
            (day, bool(is_identify))
            for day, is_identify in self._ch.rows(
                f"SELECT DISTINCT toDate32(timestamp), event = '$identify' FROM {self._db}.events"  # noqa: S608
                " WHERE inserted_at > toDateTime64(%(w)s, 3, 'UTC')"
                " AND inserted_at <= toDateTime64(%(s)s, 3, 'UTC')",
                {"w": millis(watermark), "s": millis(snapshot)},
            )
        ]

    # -- building --------------------------------------------------------------

    def _views(self) -> None:
        stg = events_between(self._db, self._config, None, None)
        self._ch.command(f"CREATE OR REPLACE VIEW {self._db}.stg_events AS {stg[1:-1]}")

    def _reading_views(self) -> None:
        """Views over the marts (replacing a table of the same name left by an older version)."""
        name = "fct_daily_active_users"
        engine = self._ch.value(
            "SELECT engine FROM system.tables WHERE database = %(db)s AND name = %(name)s",
            {"db": self._db, "name": name},
        )
        if engine is not None and engine != "View":
            self._ch.command(f"DROP TABLE {self._db}.{name}")
        body = sql_file(name).format(db=self._db, window=self._config.active_window_days)
        self._ch.command(f"CREATE OR REPLACE VIEW {self._db}.{name} AS {body}")

    def _build_all(self, span: Span, run_id: str, progress: Progress | None) -> list[ModelResult]:
        """Stage every model, then swap them all in: a failure changes no table."""
        staged: list[Staged] = []
        sources: dict[str, str] = {}
        total = len(self._models)
        try:
            for done, model in enumerate(self._models):
                if progress is not None:
                    progress(model.name, done, total)
                item = self._stage(model, span, run_id, sources)
                item.seconds = time.perf_counter() - item.clock
                staged.append(item)
                sources[model.name] = self._after_swap(item, span)
            for item in staged:
                self._swap(item)
                self._record(run_id, item, "ok", "")
        finally:
            for item in staged:
                self._ch.command(f"DROP TABLE IF EXISTS {item.staging}")
        if progress is not None:
            progress("done", total, total)
        return [item.result() for item in staged]

    def _after_swap(self, item: Staged, span: Span) -> str:
        """What a later model of this run reads for `item`: its table as the swap will leave it."""
        if item.whole:
            return item.staging
        column = item.model.partition_column
        kept = _in_ranges(column, [(item.model.first_key(span), span.last_day)])
        return (
            f"(SELECT * FROM {self._db}.{item.model.name}"  # noqa: S608 - names and dates we made
            f" WHERE {kept} AND NOT {_in_ranges(column, item.periods)}"
            f" UNION ALL SELECT * FROM {item.staging})"
        )

    def _stage(self, model: Model, span: Span, run_id: str, sources: dict[str, str]) -> Staged:
        """Build the model's new partitions into its staging table."""
        item = Staged(model, f"{self._db}.{model.name}__staging_{run_id}")
        try:
            fresh = self._ensure_table(model, span, sources)
            self._ch.command(f"CREATE TABLE {item.staging} AS {self._db}.{model.name}")
            build = Build(self._db, self._config, span, sources)
            if model.partitioning == "whole":
                item.whole = True
                select = model.select(build, span.first_day, span.last_day)
                self._ch.command(f"INSERT INTO {item.staging} {select}")
            else:
                self._plan(model, span, item, fresh=fresh)
                self._fill(build, item)
            item.rows = int(self._ch.value(f"SELECT count() FROM {item.staging}"))  # noqa: S608
        except ClickHouseError as exc:
            self._ch.command(f"DROP TABLE IF EXISTS {item.staging}")
            self._record(run_id, item, "failed", str(exc))
            raise ModelFailed(
                f"model {model.name} failed (its tables are unchanged): {exc}"
            ) from exc
        return item

    def _plan(self, model: Model, span: Span, item: Staged, *, fresh: bool) -> None:
        """Which key days to recompute, and which partitions that swaps."""
        keys = (model.first_key(span), span.last_day)
        wanted = [keys] if fresh else model.affected(self._config, span)
        item.ranges = merge_ranges(clip(wanted, *keys))
        item.whole = item.ranges == [keys]
        periods = [(model.period(a)[0], model.period(b)[1]) for a, b in item.ranges]
        item.periods = clip(merge_ranges(periods), *keys)

    def _fill(self, build: Build, item: Staged) -> None:
        """Recompute the ranges, carry over the rest of their partitions, list those."""
        model, target = item.model, f"{self._db}.{item.model.name}"
        column = model.partition_column
        for first, last in item.ranges:
            self._ch.command(
                f"INSERT INTO {item.staging} SELECT * FROM ({model.select(build, first, last)})"  # noqa: S608
                f" WHERE {column} BETWEEN toDate32('{first}') AND toDate32('{last}')",
                settings=INSERT_SETTINGS,
            )
        if item.whole:
            return
        if item.periods:
            periods, recomputed = _in_ranges(column, item.periods), _in_ranges(column, item.ranges)
            self._ch.command(
                f"INSERT INTO {item.staging} SELECT * FROM {target}"  # noqa: S608
                f" WHERE {periods} AND NOT {recomputed}",
                settings=INSERT_SETTINGS,
            )
        item.replace = sorted(self._partitions(item.staging))
        keys = (
            model.partition_id(model.first_key(build.span)),
            model.partition_id(build.span.last_day),
        )
        swapped = [(model.partition_id(a), model.partition_id(b)) for a, b in item.periods]
        item.drop = sorted(
            p
            for p in self._partitions(target)
            if p not in item.replace
            and (not keys[0] <= int(p) <= keys[1] or any(a <= int(p) <= b for a, b in swapped))
        )

    def _partitions(self, table: str) -> set[str]:
        """The partitions of `table` (database.name) that hold rows."""
        database, name = table.split(".")
        return {
            p
            for (p,) in self._ch.rows(
                "SELECT DISTINCT partition_id FROM system.parts"
                " WHERE database = %(db)s AND table = %(name)s AND active AND rows > 0",
                {"db": database, "name": name},
            )
        }

    def _swap(self, item: Staged) -> None:
        """Put the staged rows in place: EXCHANGE a whole table, REPLACE/DROP partitions."""
        target = f"{self._db}.{item.model.name}"
        if item.whole:
            self._ch.command(f"EXCHANGE TABLES {target} AND {item.staging}")
            return
        for partition in item.replace:
            self._ch.command(
                f"ALTER TABLE {target} REPLACE PARTITION ID '{partition}' FROM {item.staging}"
            )
        for partition in item.drop:
            self._ch.command(f"ALTER TABLE {target} DROP PARTITION ID '{partition}'")
        logger.info("model %s: %s", item.model.name, item.label)

    def _record(self, run_id: str, item: Staged, status: str, error: str) -> None:
        self.ledger.record(
            run_id=run_id,
            model=item.model.name,
            partition=item.label,
            status=status,
            rows=item.rows,
            duration_ms=int((item.seconds or time.perf_counter() - item.clock) * 1000),
            error=error,
            started_at=item.started,
        )

    def _ensure_table(self, model: Model, span: Span, sources: dict[str, str]) -> bool:
        """Create the table (or re-create it when its columns or partitions changed); True
        when new."""
        target = f"{self._db}.{model.name}"
        day = span.last_day
        select = model.select(Build(self._db, self._config, span, sources), day, day)
        wanted = [(r[0], r[1]) for r in self._ch.rows(f"DESCRIBE ({select})")]
        found = self._ch.rows(
            "SELECT partition_key FROM system.tables WHERE database = %(db)s AND name = %(name)s",
            {"db": self._db, "name": model.name},
        )
        if found:
            current = [(r[0], r[1]) for r in self._ch.rows(f"DESCRIBE TABLE {target}")]
            if current == wanted and found[0][0] == model.partition_key():
                return False
            logger.warning(
                "model %s: columns or partitions changed, rebuilding it whole", model.name
            )
            self._ch.command(f"DROP TABLE {target}")
        self._ch.command(f"CREATE TABLE {target} {model.ddl_options()} EMPTY AS {select}")
        return True

    def _drop_orphans(self) -> None:
        """Staging tables a crashed run left behind (we hold the lock: nobody uses them)."""
        for (name,) in self._ch.rows(
            "SELECT name FROM system.tables WHERE database = %(db)s AND name LIKE '%%__staging_%%'",
            {"db": self._db},
        ):
            self._ch.command(f"DROP TABLE IF EXISTS {self._db}.{name}")
