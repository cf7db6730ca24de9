"""Running the models: incremental by day, idempotent, one run at a time.

A run reads which days gained events since the last run (the `inserted_at` watermark),
asks each model which of its day partitions that touches, builds those partitions in a
staging table and swaps them in (`REPLACE PARTITION`; `DROP PARTITION` for a day that is
now empty). Whole tables (dim_date, dim_users) are rebuilt beside the old one and
exchanged atomically. A failure leaves every table as the last good run wrote it, drops
its staging table, and does not move the watermark, so the next run does the work again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from clickhouse_connect.driver.exceptions import ClickHouseError

from ._clickhouse import ClickHouse, millis
from ._config import ModelConfig
from ._errors import ModelFailed
from ._ledger import Ledger
from ._lock import RunLock
from ._models import EPOCH, FOREVER, MODELS, Build, Model, Span, events_between, sql_file

logger = logging.getLogger("headwater.modeler")

Progress = Callable[[str, int, int], None]  # (model, models done, models in all)


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
    days: list[date] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    counts: dict[date, int] = field(default_factory=dict)
    rows: int = 0
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    clock: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        if self.model.partitioning == "whole":
            return "all"
        if self.days:
            return f"{self.days[0]}..{self.days[-1]}"
        return f"dropped {len(self.stale)}" if self.stale else ""

    def result(self) -> ModelResult:
        partitions = 1 if self.model.partitioning == "whole" else len(self.days) + len(self.stale)
        return ModelResult(self.model.name, partitions, self.rows, self.seconds)


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


def _ranges(days: list[date]) -> Iterator[tuple[date, date]]:
    """Consecutive runs of sorted days as (first, last)."""
    start = previous = days[0]
    for day in days[1:]:
        if day != previous + timedelta(days=1):
            yield start, previous
            start = day
        previous = day
    yield start, previous


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
        db = self._db
        first, last, count = self._ch.rows(
            f"SELECT min(toDate(timestamp)), max(toDate(timestamp)), count() FROM {db}.events"  # noqa: S608
        )[0]
        if snapshot is None or count == 0:
            return None
        watermark = None if full or since or until else self.ledger.watermark()
        if since is not None or until is not None or watermark is None:
            low, high = max(first, since or first), min(last, until or last)
            changed = frozenset(_days(low, high))
            return Span(first, last, changed, low) if changed else None
        rows = self._ch.rows(
            f"SELECT DISTINCT toDate(timestamp), event = '$identify' FROM {db}.events"  # noqa: S608
            " WHERE inserted_at > toDateTime64(%(w)s, 3, 'UTC')"
            " AND inserted_at <= toDateTime64(%(s)s, 3, 'UTC')",
            {"w": millis(watermark), "s": millis(snapshot)},
        )
        if not rows:
            return None
        lookback = _days(max(first, last - timedelta(days=self._config.lookback_days - 1)), last)
        changed = frozenset({day for day, _ in rows} | set(lookback))
        identified = [day for day, is_identify in rows if is_identify]
        return Span(first, last, changed, min(identified) if identified else None)

    # -- building --------------------------------------------------------------

    def _views(self) -> None:
        stg = events_between(self._db, self._config, EPOCH, FOREVER)
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
        if item.model.partitioning == "whole":
            return item.staging
        column = item.model.partition_column
        replaced = ", ".join(f"toDate('{d}')" for d in item.days) or "toDate('1970-01-01')"
        return (
            f"(SELECT * FROM {self._db}.{item.model.name}"  # noqa: S608 - names and dates we made
            f" WHERE {column} >= toDate('{span.first_day}') AND {column} NOT IN ({replaced})"
            f" UNION ALL SELECT * FROM {item.staging})"
        )

    def _stage(self, model: Model, span: Span, run_id: str, sources: dict[str, str]) -> Staged:
        """Build the model's new partitions into its staging table."""
        item = Staged(model, f"{self._db}.{model.name}__staging_{run_id}")
        try:
            fresh = self._ensure_table(model, span, sources)
            self._ch.command(f"CREATE TABLE {item.staging} AS {self._db}.{model.name}")
            if model.partitioning == "whole":
                select = model.select(
                    Build(self._db, self._config, span, sources), span.first_day, span.last_day
                )
                self._ch.command(f"INSERT INTO {item.staging} {select}")
                item.rows = int(self._ch.value(f"SELECT count() FROM {item.staging}"))  # noqa: S608
                return item
            wanted = (
                _days(span.first_day, span.last_day)
                if fresh
                else model.affected(self._config, span)
            )
            item.days = [d for d in wanted if span.first_day <= d <= span.last_day]
            item.stale = self._stale_partitions(model, span)
            self._fill(model, span, item, sources)
        except ClickHouseError as exc:
            self._ch.command(f"DROP TABLE IF EXISTS {item.staging}")
            self._record(run_id, item, "failed", str(exc))
            raise ModelFailed(
                f"model {model.name} failed (its tables are unchanged): {exc}"
            ) from exc
        return item

    def _fill(self, model: Model, span: Span, item: Staged, sources: dict[str, str]) -> None:
        column = model.partition_column
        for first, last in _ranges(item.days) if item.days else ():
            select = model.select(Build(self._db, self._config, span, sources), first, last)
            self._ch.command(
                f"INSERT INTO {item.staging} SELECT * FROM ({select})"  # noqa: S608
                f" WHERE {column} BETWEEN toDate('{first}') AND toDate('{last}')"
            )
        item.counts = dict(
            self._ch.rows(f"SELECT {column}, count() FROM {item.staging} GROUP BY {column}")  # noqa: S608
        )
        item.rows = sum(item.counts.values())

    def _swap(self, item: Staged) -> None:
        """Put the staged rows in place: EXCHANGE a whole table, REPLACE/DROP day partitions."""
        target = f"{self._db}.{item.model.name}"
        if item.model.partitioning == "whole":
            self._ch.command(f"EXCHANGE TABLES {target} AND {item.staging}")
            return
        for day in item.days:
            partition = day.strftime("%Y%m%d")
            if item.counts.get(day):
                self._ch.command(
                    f"ALTER TABLE {target} REPLACE PARTITION ID '{partition}' FROM {item.staging}"
                )
            else:
                self._ch.command(f"ALTER TABLE {target} DROP PARTITION ID '{partition}'")
        for partition in item.stale:
            self._ch.command(f"ALTER TABLE {target} DROP PARTITION ID '{partition}'")
        logger.info("model %s: %s", item.model.name, item.label)

    def _record(self, run_id: str, item: Staged, status: str, error: str) -> None:
        self.ledger.record(
            run_id=run_id,
            model=item.model.name,
            partition=item.label,
            status=status,
            rows=item.rows,
            duration_ms=int((time.perf_counter() - item.clock) * 1000),
            error=error,
            started_at=item.started,
        )

    def _ensure_table(self, model: Model, span: Span, sources: dict[str, str]) -> bool:
        """Create the table (or re-create it when its columns changed); True when new."""
        target = f"{self._db}.{model.name}"
        day = span.last_day
        select = model.select(Build(self._db, self._config, span, sources), day, day)
        wanted = [(r[0], r[1]) for r in self._ch.rows(f"DESCRIBE ({select})")]
        exists = self._ch.value(
            "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(name)s",
            {"db": self._db, "name": model.name},
        )
        if exists:
            current = [(r[0], r[1]) for r in self._ch.rows(f"DESCRIBE TABLE {target}")]
            if current == wanted:
                return False
            logger.warning("model %s: columns changed, rebuilding it whole", model.name)
            self._ch.command(f"DROP TABLE {target}")
        self._ch.command(f"CREATE TABLE {target} {model.ddl_options()} EMPTY AS {select}")
        return True

    def _stale_partitions(self, model: Model, span: Span) -> list[str]:
        """Partitions of days before the first event (events are never deleted, but a
        backfill into another database, or a changed ingestion, can leave some)."""
        oldest = span.first_day
        found = self._ch.rows(
            "SELECT DISTINCT partition_id FROM system.parts"
            " WHERE database = %(db)s AND table = %(name)s AND active",
            {"db": self._db, "name": model.name},
        )
        keep_from = oldest.strftime("%Y%m%d")
        return sorted(p for (p,) in found if p < keep_from)

    def _drop_orphans(self) -> None:
        """Staging tables a crashed run left behind (we hold the lock: nobody uses them)."""
        for (name,) in self._ch.rows(
            "SELECT name FROM system.tables WHERE database = %(db)s AND name LIKE '%%__staging_%%'",
            {"db": self._db},
        ):
            self._ch.command(f"DROP TABLE IF EXISTS {self._db}.{name}")


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
