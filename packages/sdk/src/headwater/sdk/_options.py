"""The client's settings: one validated, immutable value."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from ._errors import ConfigError
from ._wire import Encoding

OverflowPolicy = Literal["drop_newest", "drop_oldest", "block"]

_POSITIVE = (
    "max_queue_events",
    "max_queue_bytes",
    "max_event_bytes",
    "max_batch_events",
    "max_batch_bytes",
    "flush_interval",
    "request_timeout",
    "backoff_base",
    "backoff_cap",
    "spool_max_bytes",
    "spool_max_attempts",
)


class ClientOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Every tunable of a client, with defaults that suit a web application."""

    host: str = "http://localhost:8000"
    encoding: Encoding = "json"
    gzip: bool = True
    max_queue_events: int = 100_000
    max_queue_bytes: int = 64 * 1024 * 1024
    max_event_bytes: int = 1_000_000
    max_batch_events: int = 500
    max_batch_bytes: int = 4 * 1024 * 1024
    flush_interval: float = 0.5
    on_full: OverflowPolicy = "drop_newest"  # at the queue's limits, or the spool's
    block_timeout: float = 1.0
    max_retries: int = 8
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    max_retry_after: float = 600.0
    request_timeout: float = 10.0
    shutdown_timeout: float = 5.0
    spool_dir: Path | None = None  # each event in a file before its call returns
    spool_max_bytes: int = 256 * 1024 * 1024  # of events not yet delivered or given up on
    spool_max_attempts: int = 20  # rounds of max_retries for a batch that fails on its own

    def __post_init__(self) -> None:
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("max_retries", "block_timeout", "shutdown_timeout", "max_retry_after"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)!r}")
        if self.encoding not in ("json", "msgpack"):
            raise ConfigError(f"encoding must be 'json' or 'msgpack', got {self.encoding!r}")
        if self.on_full not in ("drop_newest", "drop_oldest", "block"):
            raise ConfigError(
                f"on_full must be 'drop_newest', 'drop_oldest' or 'block', got {self.on_full!r}"
            )
        if not self.host.startswith(("http://", "https://")):
            raise ConfigError(f"host must be an http(s) URL, got {self.host!r}")
        if self.max_event_bytes > self.max_batch_bytes:
            raise ConfigError("max_event_bytes must not exceed max_batch_bytes")
        if self.max_batch_bytes > self.max_queue_bytes:
            raise ConfigError("max_batch_bytes must not exceed max_queue_bytes")

    @property
    def endpoint(self) -> str:
        """Where batches are posted."""
        return self.host.rstrip("/") + "/v1/events"
