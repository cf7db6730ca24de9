"""The gateway's Prometheus metrics, in a registry of their own (one per app)."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LAG = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_ROWS = (1, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000)


class SourceCounters(NamedTuple):
    """The event counters of one endpoint family."""

    received: Counter
    accepted: Counter
    duplicates: Counter
    rejected: Counter


class ForwardMetrics:
    """The forwarder's counters and gauges (in a gateway's registry, or its own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry(auto_describe=True)
        self.registry = r
        self.sent = Counter("headwater_forward_sent", "Events PostHog took", registry=r)
        self.failed_attempts = Counter(
            "headwater_forward_failed_attempts",
            "Posts to PostHog that will be tried again, by what went wrong"
            " (network, 5xx, 408, 429)",
            ["reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "headwater_forward_dead_letters",
            "Events PostHog refused for good, kept in forward_dead_letters",
            registry=r,
        )
        self.lag_seconds = Gauge(
            "headwater_forward_lag_seconds",
            "Age of the oldest stored event not yet forwarded (0: caught up)",
            ["project"],
            registry=r,
        )
        self.lag_events = Gauge(
            "headwater_forward_lag_events",
            "Stored events not yet forwarded",
            ["project"],
            registry=r,
        )
        self.leader = Gauge(
            "headwater_forward_leader",
            "1 while this process holds the forwarding lease",
            registry=r,
        )


class Metrics:
    """Counters and histograms of one gateway; `render()` is the `/metrics` body.

    The labelled children counted on every request are looked up once and kept:
    prometheus-client's `labels()` costs a few µs a call, a cost paid per request.
    """

    def __init__(self) -> None:
        self._sources: dict[str, SourceCounters] = {}
        self._requests: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "headwater_events_received", "Events received", ["source"], registry=r
        )
        self.accepted = Counter(
            "headwater_events_accepted", "Events stored", ["source"], registry=r
        )
        self.duplicates = Counter(
            "headwater_events_duplicate", "Duplicate events acknowledged", ["source"], registry=r
        )
        self.rejected = Counter(
            "headwater_events_rejected", "Invalid events refused", ["source"], registry=r
        )
        self.requests = Counter(
            "headwater_requests", "Requests answered", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "headwater_request_duration_seconds",
            "Seconds from a request's arrival to its answer (a 200 means: stored)",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.native_batches = Counter(
            "headwater_native_batches",
            "Native JSON batches whose messages all decoded, by how their events were"
            " checked: together (columns: no Python per event) or one by one (one of them"
            " needed it, or the project has a tracking plan)",
            ["path"],
            registry=r,
        )
        self.batches_as_columns = self.native_batches.labels("columns")
        self.batches_one_by_one = self.native_batches.labels("one_by_one")
        self.dedupe_bypassed = Counter(
            "headwater_dedupe_bypassed",
            "Events accepted without a Redis claim (Redis down)",
            registry=r,
        )
        self.unavailable = Counter(
            "headwater_unavailable", "Requests refused with 503", ["reason"], registry=r
        )
        self.dead_letters = Counter(
            "headwater_dead_letters", "Rows written to ingest_errors", registry=r
        )
        self.dead_letter_failures = Counter(
            "headwater_dead_letter_failures",
            "ingest_errors rows that could not be written",
            registry=r,
        )
        self.commit_rows = Histogram(
            "headwater_commit_rows", "Rows per ClickHouse insert", buckets=_ROWS, registry=r
        )
        self.commit_seconds = Histogram(
            "headwater_commit_seconds",
            "Seconds per ClickHouse insert",
            buckets=_SECONDS,
            registry=r,
        )
        self.commit_queue = Gauge(
            "headwater_commit_queue_rows", "Rows waiting for an insert", registry=r
        )
        self.flags = Counter(
            "headwater_flags_requests",
            "Feature flag requests, by answer: PostHog's, failed (PostHog slow, down or"
            " refusing: no flags, with errors), none (no PostHog configured)",
            ["answer"],
            registry=r,
        )
        self.forward = ForwardMetrics(r)
        self.loop_lag = Histogram(
            "headwater_event_loop_lag_seconds",
            "How late the event loop ran a timer (every request waits as long)",
            buckets=_LAG,
            registry=r,
        )
        self.plan_violations = Counter(
            "headwater_tracking_plan_violations",
            "Events that broke the tracking plan",
            ["project", "policy"],
            registry=r,
        )

    def source(self, source: str) -> SourceCounters:
        """The event counters of `source` (native, posthog, segment, replay …)."""
        found = self._sources.get(source)
        if found is None:
            found = SourceCounters(
                *(
                    c.labels(source)
                    for c in (self.received, self.accepted, self.duplicates, self.rejected)
                )
            )
            self._sources[source] = found
        return found

    def answered(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request, and how long it took."""
        children = self._requests.get((route, status))
        if children is None:
            children = self._requests[route, status] = (
                self.requests.labels(route, str(status)),
                self.request_seconds.labels(route),
            )
        count, timing = children
        count.inc()
        timing.observe(seconds)

    def flushed(self, rows: int, seconds: float) -> None:
        """Record one group-commit insert."""
        self.commit_rows.observe(rows)
        self.commit_seconds.observe(seconds)

    async def watch_loop(self, interval: float = 0.1) -> None:
        """Observe, every `interval`, how late the event loop woke a sleeper: a stall
        (a long callback, a garbage collection, CPU starvation) shows here first."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + interval
            await asyncio.sleep(interval)
            self.loop_lag.observe(max(0.0, loop.time() - due))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
