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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from clickhouse_connect.driver.exceptions import ClickHouseError

from ._clickhouse import ClickHouse
from ._config import ModelConfig
from ._errors import ModelFailed
from ._ledger import Ledger
from ._lock import RunLock
from ._models import EPOCH, FOREVER, MODELS, Model, Span, events_between

logger = logging.getLogger("headwater.modeler")

Progress = Callable[[str, int, int], None]  # (model, models done, models in all)


@dataclass
class ModelResult:
    model: str
    partitions: int
    rows: int
    seconds: float


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

    def __init__(self, clickhouse: ClickHouse, config: ModelConfig, *, lock: RunLock) -> None:
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
            for done, model in enumerate(MODELS):
                if progress is not None:
                    progress(model.name, done, len(MODELS))
                report.results.append(self._build(model, span, run_id))
            if progress is not None:
                progress("done", len(MODELS), len(MODELS))
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
            " WHERE inserted_at > %(w)s AND inserted_at <= %(s)s",
            {"w": watermark, "s": snapshot},
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

    def _build(self, model: Model, span: Span, run_id: str) -> ModelResult:
        started = datetime.now(UTC)
        clock = time.perf_counter()
        staging = f"{self._db}.{model.name}__staging_{run_id}"
        try:
            fresh = self._ensure_table(model, span)
            if model.partitioning == "whole":
                partitions, rows, label = self._swap_whole(model, span, staging)
            else:
                days = (
                    _days(span.first_day, span.last_day)
                    if fresh
                    else model.affected(self._config, span)
                )
                partitions, rows, label = self._swap_days(model, span, staging, days)
        except ClickHouseError as exc:
            self._record(
                run_id, model, "", "failed", 0, clock=clock, started=started, error=str(exc)
            )
            raise ModelFailed(
                f"model {model.name} failed (its tables are unchanged): {exc}"
            ) from exc
        finally:
            self._ch.command(f"DROP TABLE IF EXISTS {staging}")
        self._record(run_id, model, label, "ok", rows, clock=clock, started=started, error="")
        seconds = time.perf_counter() - clock
        logger.info(
            "model %s: %d partitions, %d rows, %.2fs", model.name, partitions, rows, seconds
        )
        return ModelResult(model.name, partitions, rows, seconds)

    def _record(
        self, run_id: str, model: Model, label: str, status: str, rows: int, *,
        clock: float, started: datetime, error: str,
    ) -> None:  # fmt: skip
        self.ledger.record(
            run_id=run_id,
            model=model.name,
            partition=label,
            status=status,
            rows=rows,
            duration_ms=int((time.perf_counter() - clock) * 1000),
            error=error,
            started_at=started,
        )

    def _ensure_table(self, model: Model, span: Span) -> bool:
        """Create the table (or re-create it when its columns changed); True when new."""
        target = f"{self._db}.{model.name}"
        select = model.select(self._db, self._config, span, span.last_day, span.last_day)
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

    def _swap_whole(self, model: Model, span: Span, staging: str) -> tuple[int, int, str]:
        target = f"{self._db}.{model.name}"
        select = model.select(self._db, self._config, span, span.first_day, span.last_day)
        self._ch.command(f"CREATE TABLE {staging} AS {target}")
        self._ch.command(f"INSERT INTO {staging} {select}")
        rows = int(self._ch.value(f"SELECT count() FROM {staging}"))  # noqa: S608
        self._ch.command(f"EXCHANGE TABLES {target} AND {staging}")
        return 1, rows, "all"

    def _swap_days(
        self, model: Model, span: Span, staging: str, days: list[date]
    ) -> tuple[int, int, str]:
        days = [d for d in days if span.first_day <= d <= span.last_day]
        target = f"{self._db}.{model.name}"
        stale = self._stale_partitions(model, span)
        if not days and not stale:
            return 0, 0, ""
        self._ch.command(f"CREATE TABLE {staging} AS {target}")
        column = model.partition_column
        for first, last in _ranges(days) if days else ():
            select = model.select(self._db, self._config, span, first, last)
            self._ch.command(
                f"INSERT INTO {staging} SELECT * FROM ({select})"  # noqa: S608
                f" WHERE {column} BETWEEN toDate('{first}') AND toDate('{last}')"
            )
        counts = dict(self._ch.rows(f"SELECT {column}, count() FROM {staging} GROUP BY {column}"))  # noqa: S608
        for day in days:
            partition = day.strftime("%Y%m%d")
            if counts.get(day):
                self._ch.command(
                    f"ALTER TABLE {target} REPLACE PARTITION ID '{partition}' FROM {staging}"
                )
            else:
                self._ch.command(f"ALTER TABLE {target} DROP PARTITION ID '{partition}'")
        for partition in stale:
            self._ch.command(f"ALTER TABLE {target} DROP PARTITION ID '{partition}'")
        label = f"{days[0]}..{days[-1]}" if days else f"dropped {len(stale)}"
        return len(days) + len(stale), sum(counts.values()), label

    def _stale_partitions(self, model: Model, span: Span) -> list[str]:
        """Partitions outside what the model keeps: before the data, or past its window."""
        oldest = span.first_day
        if model.name == "fct_daily_active_users":
            oldest = span.last_day - timedelta(days=self._config.active_window_days - 1)
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
