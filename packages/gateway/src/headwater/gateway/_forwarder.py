"""Forwarding stored events to PostHog, at least once, from ClickHouse.

A thread reads each forwarded project's events past its cursor, oldest first, up to
`READ_BATCHES` batches at a time (one scan of the rows past the cursor per read, not per
batch: `ForwardStore`); posts them a batch at a time with the events' own uuids (PostHog
collapses repeats of a uuid); and moves the cursor past a batch only once PostHog took it
(written to ClickHouse after each read's batches). A batch PostHog cannot
take now (down, 5xx, 408, 429, the network) is posted again after a full-jitter backoff
(or PostHog's Retry-After), for as long as it takes: the cursor waits, so nothing is
skipped, and a restart resumes where it stood. A batch refused for good (another 4xx) is
posted in halves until each refused event stands alone, and that one is kept in
`forward_dead_letters` with PostHog's answer. One process among the gateways sharing a
database forwards: the one holding the lease.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import NamedTuple

from headwater.modeler import ClickHouse
from headwater.sdk._retry import backoff_delay

from ._forward_store import EPOCH, Cursor, DeadLetter, ForwardStore, StoredEvent
from ._lease import Lease, RedisLease, SoleLease
from ._metrics import ForwardMetrics
from ._posthog_batch import Answer, Capture, PostHogBatches, capture, encode
from ._settings import PostHogRoutes, PostHogTarget, Settings

logger = logging.getLogger("headwater.gateway")

BACKOFF_BASE_SECONDS = 0.5
READ_BATCHES = 40  # batches of rows read from ClickHouse at once
LAG_EVERY_SECONDS = 5.0  # how often the lag gauges are measured (one query per project)


class Pace(NamedTuple):
    """How the forwarder paces itself (the `forward_*` settings)."""

    batch_size: int = 500
    poll: float = 1.0  # seconds between looks while there is nothing to send
    backoff_cap: float = 30.0  # the longest wait between two failed posts


DEFAULT_PACE = Pace()


class _Message(NamedTuple):
    row: StoredEvent
    capture: Capture


class Forwarder:
    """Moves each forwarded project's stored events to its PostHog, from a thread."""

    def __init__(
        self,
        store: ForwardStore,
        routes: PostHogRoutes,
        *,
        lease: Lease,
        metrics: ForwardMetrics,
        pace: Pace = DEFAULT_PACE,
    ) -> None:
        self._store = store
        self._routes = routes
        self._lease = lease
        self._metrics = metrics
        self._pace = pace
        self._posthog = PostHogBatches()
        self._cursors: dict[str, Cursor] | None = None  # None: read them before going on
        self._stopping = threading.Event()
        self._outage = 0  # failed posts in a row
        self._lag_measured = 0.0
        self._thread = threading.Thread(target=self._run, name="posthog-forwarder", daemon=True)

    def start(self) -> None:
        """Forward from a thread of its own until `stop`."""
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """End the thread (a post under way finishes, within `timeout`); give up the lease.
        Nothing is lost: what was not forwarded stays past the cursor."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._lease.release()
        self._posthog.close()
        self._metrics.leader.set(0)

    def drain(self) -> int:
        """Forward on this thread until nothing settled is left (or the lease is elsewhere);
        the events handled (sent or buried)."""
        handled = total = self.forward_once()
        while handled:
            handled = self.forward_once()
            total += handled
        return total

    def forward_once(self) -> int:
        """One pass: a batch of each forwarded project (while the lease is held here); the
        events handled: sent to PostHog, or refused by it for good and buried."""
        if not self._hold():
            return 0
        cursors = self._cursors if self._cursors is not None else self._read_cursors()
        handled = sum(
            self._forward_batch(project, target, cursors)
            for project, target in self._routes.forwarded()
        )
        self._measure_lag(cursors, force=not handled)
        return handled

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                handled = self.forward_once()
            except Exception as exc:  # ClickHouse away, or a bug: the cursor stays; try again
                logger.warning("forwarding paused: %s", exc, exc_info=logger.isEnabledFor(10))
                self._cursors = None
                handled = 0
            if not handled:
                self._stopping.wait(self._pace.poll)

    def _hold(self) -> bool:
        held = self._lease.hold()
        self._metrics.leader.set(1 if held else 0)
        if not held:
            self._cursors = None  # another process moves them meanwhile
        return held

    def _read_cursors(self) -> dict[str, Cursor]:
        cursors = self._store.cursors()
        epoch = cursors.get(EPOCH) or self._store.begin()
        for project, _ in self._routes.forwarded():
            cursors.setdefault(project, epoch)
        self._cursors = cursors
        return cursors

    def _forward_batch(
        self, project: str, target: PostHogTarget, cursors: dict[str, Cursor]
    ) -> int:
        """Read up to `READ_BATCHES` batches past the cursor and post them in order; the
        cursor moves past each one PostHog took or refused for good (written once)."""
        size = self._pace.batch_size
        rows = self._store.after(project, cursors[project], size * READ_BATCHES)
        handled = 0
        for first in range(0, len(rows), size):
            batch = rows[first : first + size]
            if not self._deliver(project, target, batch):
                break
            handled += len(batch)
        if handled:
            cursors[project] = rows[handled - 1].cursor
            self._store.advance(project, cursors[project])
        return handled

    def _deliver(self, project: str, target: PostHogTarget, rows: list[StoredEvent]) -> bool:
        """Post `rows` until PostHog took or refused each; False when stopped on the way."""
        messages, letters = _messages(rows)
        pending = [messages] if messages else []
        sent = 0
        while pending:
            chunk = pending.pop(0)
            answer = self._post_until_answered(target, [m.capture for m in chunk])
            if answer is None:
                return False
            if answer.sent:
                sent += len(chunk)
            elif len(chunk) > 1:  # refused: post halves, in order, to find which
                half = len(chunk) // 2
                pending[:0] = [chunk[:half], chunk[half:]]
            else:
                letters.append(_buried(chunk[0], answer))
        self._metrics.sent.inc(sent)
        if letters:
            self._bury(project, letters)
        return True

    def _post_until_answered(self, target: PostHogTarget, batch: list[Capture]) -> Answer | None:
        """PostHog's answer once it took or refused the batch; None when stopped (or the
        lease went elsewhere) while it was away."""
        attempt = 0
        while not self._stopping.is_set() and self._hold():
            answer = self._posthog.post(target, batch)
            if answer.sent or answer.final or answer.too_large:
                self._recovered()
                return answer
            self._failed(answer)
            delay = backoff_delay(attempt, base=BACKOFF_BASE_SECONDS, cap=self._pace.backoff_cap)
            attempt += 1
            self._stopping.wait(max(delay, answer.retry_after or 0.0))
        return None

    def _failed(self, answer: Answer) -> None:
        self._metrics.failed_attempts.labels(_kind(answer.status)).inc()
        self._outage += 1
        if self._outage == 1:  # one line per outage, not one per attempt
            logger.warning("PostHog does not take events; retrying: %s", answer.reason)
        else:
            logger.debug("PostHog still does not take events: %s", answer.reason)

    def _recovered(self) -> None:
        if self._outage:
            logger.info("PostHog takes events again, after %d failed posts", self._outage)
        self._outage = 0

    def _bury(self, project: str, letters: list[DeadLetter]) -> None:
        self._store.bury(project, letters)
        self._metrics.dead_letters.inc(len(letters))
        shown = ", ".join(f"{d.row.event_id} ({d.reason})" for d in letters[:3])
        logger.warning(
            "%d events of project %s not forwarded, kept in forward_dead_letters: %s%s",
            len(letters),
            project,
            shown,
            ", …" if len(letters) > 3 else "",
        )

    def _measure_lag(self, cursors: dict[str, Cursor], *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._lag_measured < LAG_EVERY_SECONDS:
            return
        self._lag_measured = now
        for project, _ in self._routes.forwarded():
            lag = self._store.lag(project, cursors[project])
            self._metrics.lag_events.labels(project).set(lag.events)
            self._metrics.lag_seconds.labels(project).set(lag.seconds)


def _messages(rows: list[StoredEvent]) -> tuple[list[_Message], list[DeadLetter]]:
    """The rows as PostHog messages, and the dead letters of those that cannot be one."""
    messages, letters = [], []
    for row in rows:
        try:
            messages.append(_Message(row, capture(row)))
        except ValueError as exc:
            letters.append(DeadLetter(row, 0, str(exc), row.properties))
    return messages, letters


def _buried(message: _Message, answer: Answer) -> DeadLetter:
    return DeadLetter(message.row, answer.status, answer.reason, encode(message.capture))


def _kind(status: int) -> str:
    """The `reason` label of a failed post: a few values, never the message."""
    if status == 0:
        return "network"
    return "5xx" if status >= 500 else str(status)


def forwarder_for(
    settings: Settings,
    clickhouse: ClickHouse,
    metrics: ForwardMetrics,
) -> Forwarder:
    """The forwarder `settings` describe, over `clickhouse`'s database: its lease in Redis
    when there is one (keyed by the database), else held alone."""
    lease: Lease = SoleLease()
    if settings.redis_url:
        key = f"{settings.redis_prefix}:forwarder:{clickhouse.database}"
        lease = RedisLease(settings.redis_url, key=key, ttl=settings.forward_lease_seconds)
    elif not settings.embedded:
        logger.warning(
            "HEADWATER_REDIS_URL is unset: this gateway forwards without a lease; run one"
            " forwarder per database (HEADWATER_FORWARD_IN_PROCESS=false elsewhere)"
        )
    pace = Pace(
        batch_size=settings.forward_batch_size,
        poll=settings.forward_poll_seconds,
        backoff_cap=settings.forward_backoff_cap_seconds,
    )
    store = ForwardStore(clickhouse, settle=settings.forward_settle_seconds)
    routes = PostHogRoutes(settings)
    return Forwarder(store, routes, lease=lease, metrics=metrics, pace=pace)
