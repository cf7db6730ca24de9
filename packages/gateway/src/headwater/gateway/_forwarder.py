"""Forwarding stored events to PostHog, on a thread of its own.

Ingestion only hands rows to a queue bounded in events (never waits: a full queue drops
and counts); the forwarder thread posts them in batches with the `posthog` library's
`batch_post`, retrying a few times, and counts what was sent, failed and dropped, also
what a shutdown leaves queued.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
from posthog.request import batch_post

from ._events import EventRow, RowBlock
from ._metrics import Metrics
from ._settings import PostHogTarget

logger = logging.getLogger("headwater.gateway")

Post = Callable[[str, str, list[dict[str, Any]]], None]  # (host, api_key, batch)

_decode = msgspec.json.Decoder(dict[str, Any])


def posthog_post(host: str, api_key: str, batch: list[dict[str, Any]]) -> None:
    """Post one batch with posthog-python (raises on anything but 200)."""
    batch_post(api_key, host=host, gzip=True, timeout=10, batch=batch)


def posthog_message(row: EventRow) -> dict[str, Any]:
    """The PostHog capture message of a stored row: same uuid, time, user and properties."""
    properties = _decode.decode(row.properties)
    message: dict[str, Any] = {
        "event": row.event,
        "distinct_id": row.distinct_id,
        "properties": properties,
        "timestamp": row.timestamp.isoformat(),
        "uuid": row.event_id,
        "type": "capture",
    }
    for key in ("$set", "$set_once"):
        if isinstance(properties.get(key), dict):
            message[key] = properties[key]
    return message


class Forwarder:
    """Sends rows of each project to its PostHog (`targets`, else `default`) from a thread."""

    def __init__(
        self,
        targets: dict[str, PostHogTarget | None],
        *,
        default: PostHogTarget | None,
        metrics: Metrics,
        queue_size: int,
        post: Post = posthog_post,
        batch_size: int = 500,
        attempts: int = 3,
    ) -> None:
        self._targets = targets
        self._default = default
        self._metrics = metrics
        self._post = post
        self._batch_size = batch_size
        self._attempts = attempts
        self._queue: queue.SimpleQueue[RowBlock | None] = queue.SimpleQueue()
        self._capacity = queue_size  # events
        self._queued = 0  # events in the queue or being sent
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="posthog-forwarder", daemon=True)

    @property
    def enabled(self) -> bool:
        """Whether any project's events go to a PostHog."""
        return self._default is not None or any(self._targets.values())

    def start(self) -> None:
        if self.enabled:
            self._thread.start()

    def forward(self, block: RowBlock) -> None:
        """Queue one request's stored rows (one project's) for PostHog; never blocks (a
        full queue drops and counts)."""
        count = len(block)
        if not count or self.target(block.project) is None:
            return
        with self._lock:  # one request larger than the whole queue goes when it is empty
            room = not self._stopped and (
                not self._queued or self._queued + count <= self._capacity
            )
            if room:
                self._queued += count
        if not room:
            self._metrics.forward_dropped.inc(count)
            return
        # Made into rows on the forwarder's thread, not the event loop. Until then its
        # properties keep the request's body alive: most of it, and bounded in events.
        self._queue.put(block)

    def target(self, project: str) -> PostHogTarget | None:
        """The PostHog of `project`'s events; None: they are not forwarded."""
        return self._targets.get(project, self._default)

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            try:
                target = self.target(block.project)
                if target is not None:
                    rows = block.rows()
                    for start in range(0, len(rows), self._batch_size):
                        self._send(target, rows[start : start + self._batch_size])
            except Exception:  # the thread must outlive a bug: later rows still go
                logger.exception("forwarding to PostHog failed")
            finally:
                with self._lock:
                    self._queued -= len(block)

    def _send(self, target: PostHogTarget, rows: list[EventRow]) -> None:
        messages, unreadable = [], []
        for row in rows:
            try:
                messages.append(posthog_message(row))
            except (msgspec.DecodeError, TypeError, ValueError) as exc:  # e.g. 1e999
                unreadable.append(f"{row.event_id} ({exc})")
        if unreadable:  # one line per batch, not one per event
            self._metrics.forward_failed.inc(len(unreadable))
            logger.warning(
                "%d events not forwarded to PostHog, their properties unreadable: %s",
                len(unreadable),
                ", ".join(unreadable[:5]) + (", …" if len(unreadable) > 5 else ""),
            )
        if not messages:
            return
        for attempt in range(self._attempts):
            try:
                self._post(target.host, target.api_key, messages)
            except Exception as exc:  # the posthog library raises APIError, requests errors …  # noqa: BLE001
                logger.warning("forwarding %d events to PostHog failed: %s", len(messages), exc)
                time.sleep(random.uniform(0, 0.2 * 2**attempt))  # noqa: S311 - jitter
            else:
                self._metrics.forward_sent.inc(len(messages))
                return
        self._metrics.forward_failed.inc(len(messages))

    def stop(self, timeout: float) -> None:
        """Forward what is queued (within `timeout`), then end the thread. What is still
        queued then, and what comes after, is dropped, and counted; a batch still being
        sent is counted when its send ends (if the process lives that long)."""
        with self._lock:
            self._stopped = True
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        left = 0
        while True:
            try:
                block = self._queue.get_nowait()
            except queue.Empty:
                break
            if block is None:
                self._queue.put(None)  # the thread's stop signal stays last
                break
            left += len(block)
        if left:
            with self._lock:
                self._queued -= left
            self._metrics.forward_dropped.inc(left)
            logger.warning("shutting down: %d events not forwarded to PostHog", left)
