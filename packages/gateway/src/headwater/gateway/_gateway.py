"""The running gateway: its parts, started and stopped in order."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from headwater.modeler import (
    ClickHouse,
    FileLock,
    ModelConfig,
    ModelerSettings,
    Monitor,
    Runner,
    Scheduler,
    Timer,
    WarehouseUnavailable,
    alert_dispatcher,
)

from ._clickhouse import migrate
from ._committer import GroupCommitter
from ._dedupe import DedupeStore, MemoryDedupeStore, RedisDedupeStore
from ._errors import SinkUnavailable
from ._events import EventWindow, RowBlock
from ._flags import FlagsProxy
from ._forwarder import Forwarder, forwarder_for
from ._ingest import Ingestor
from ._metrics import Metrics
from ._plan import PlanEnforcer
from ._settings import PostHogRoutes, Settings
from ._sink import ClickHouseSink

logger = logging.getLogger("headwater.gateway")


class Gateway:
    """ClickHouse, the dedupe store, the group committer and the forwarder of one app.

    A `clickhouse` passed in is shared (tests, the embedded modeler) and left open at stop.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clickhouse: ClickHouse | None = None,
        dedupe: DedupeStore | None = None,
    ) -> None:
        self.settings = settings
        # the event times stored: every request's context takes its bounds from it
        self.window = EventWindow.of(settings)
        self.metrics = Metrics()
        self._owns_clickhouse = clickhouse is None
        self._clickhouse = clickhouse
        self.dedupe = dedupe or _dedupe_store(settings)
        self.routes = PostHogRoutes(settings)
        self.forwarder: Forwarder | None = None  # started with the gateway, when it forwards
        # A flags request goes to the PostHog its project's events go to (none: no flags).
        timeout = settings.posthog_flags_timeout_seconds
        self.flags = FlagsProxy(timeout=timeout) if self.routes.enabled else None
        self.plans = PlanEnforcer.from_files(
            settings.tracking_plans,
            violations=settings.tracking_policy,
            unknown=settings.tracking_unknown,
            count=lambda project, policy: self.metrics.plan_violations.labels(
                project, policy
            ).inc(),
        )
        self._ingestor: Ingestor | None = None
        self._scheduler: Scheduler | None = None
        self._committer: GroupCommitter[RowBlock] | None = None
        self._lag_probe: asyncio.Task[None] | None = None

    @property
    def clickhouse(self) -> ClickHouse:
        assert self._clickhouse is not None, "the gateway is not started"
        return self._clickhouse

    @property
    def ingestor(self) -> Ingestor:
        assert self._ingestor is not None, "the gateway is not started"
        return self._ingestor

    async def start(self) -> None:
        """Open ClickHouse, apply migrations, start the committer and the forwarder."""
        s = self.settings
        if self._clickhouse is None:
            self._clickhouse = await self._connect()
        clickhouse = self._clickhouse
        applied = await asyncio.to_thread(migrate, clickhouse)
        logger.info(
            "ClickHouse %s ready (migrations applied now: %s)",
            s.clickhouse_database,
            applied or "none",
        )
        if isinstance(self.dedupe, MemoryDedupeStore):
            logger.warning("HEADWATER_REDIS_URL is unset: dedupe uses an in-process store")
        await self.dedupe.start()
        sink = ClickHouseSink(clickhouse)
        self._committer = GroupCommitter(
            sink.insert_events,
            max_rows=s.commit_max_rows,
            max_bytes=s.commit_max_bytes,
            max_delay=s.commit_max_delay_ms / 1000,
            queue_rows=s.commit_queue_rows,
            deadline=s.insert_deadline_seconds,
            on_flush=self.metrics.flushed,
        )
        self._committer.start()
        self._ingestor = Ingestor(
            dedupe=self.dedupe,
            committer=self._committer,
            sink=sink,
            metrics=self.metrics,
            fail_closed=s.redis_failure == "reject",
            pending_wait=s.insert_deadline_seconds,
            dead_letter_rows=s.commit_queue_rows,
            plans=self.plans,
        )
        if self.routes.enabled and s.forward_in_process:
            self.forwarder = forwarder_for(s, clickhouse, self.metrics.forward)
            self.forwarder.start()
        self._lag_probe = asyncio.get_running_loop().create_task(
            self.metrics.watch_loop(), name="loop-lag"
        )
        if s.embedded and s.model_schedule:
            self._scheduler = _scheduler(s, clickhouse)
            self._scheduler.start()

    async def _connect(self) -> ClickHouse:
        s = self.settings
        try:
            return await asyncio.to_thread(
                ClickHouse.connect,
                s.clickhouse_url,
                database=s.clickhouse_database,
                cluster=s.clickhouse_cluster,
            )
        except WarehouseUnavailable as exc:
            raise SinkUnavailable(str(exc), retry_after=5) from exc

    async def stop(self) -> None:
        """Stop taking rows, store what is buffered, stop forwarding, close."""
        if self._lag_probe is not None:
            self._lag_probe.cancel()
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.stop)
        if self._committer is not None:
            await self._committer.drain()
        if self._ingestor is not None:
            await self._ingestor.settled()
        if self.forwarder is not None:
            await asyncio.to_thread(self.forwarder.stop, 10.0)
        if self.flags is not None:
            await self.flags.close()
        await self.dedupe.close()
        if self._owns_clickhouse and self._clickhouse is not None:
            await asyncio.to_thread(self._clickhouse.close)

    @property
    def queued_rows(self) -> int:
        return self._committer.queued_rows if self._committer is not None else 0


def _scheduler(settings: Settings, clickhouse: ClickHouse) -> Scheduler:
    """The models' schedule, sharing this process's chDB connection."""
    config = ModelConfig.load(Path(settings.models) if settings.models else None)
    directory = Path(settings.clickhouse_url.removeprefix("chdb://"))
    lock = FileLock(directory.parent / f"modeler-{settings.clickhouse_database}.lock")
    timer = Timer(interval=config.schedule.interval_seconds, cron=config.schedule.cron)
    logger.info("embedded mode: the models and checks run in this process (%s)", config.schedule)
    # The alert channels come from the same HEADWATER_ALERT_* variables as `headwater check`.
    dispatcher = alert_dispatcher(ModelerSettings.from_env(), clickhouse)
    monitor = Monitor(clickhouse, config, dispatcher=dispatcher)
    return Scheduler(Runner(clickhouse, config, lock=lock), timer, monitor=monitor)


def _dedupe_store(settings: Settings) -> DedupeStore:
    if settings.redis_url:
        return RedisDedupeStore(
            settings.redis_url,
            prefix=settings.redis_prefix,
            ttl=settings.dedupe_ttl_seconds,
            pending_ttl=settings.dedupe_pending_seconds,
        )
    return MemoryDedupeStore(
        ttl=settings.dedupe_ttl_seconds, pending_ttl=settings.dedupe_pending_seconds
    )
