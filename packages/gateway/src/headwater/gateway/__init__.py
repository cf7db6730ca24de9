"""Headwater's ingestion gateway: receives events over HTTP (native, PostHog and Segment
APIs), validates them, dedupes them, group-commits them into ClickHouse and forwards them
to PostHog."""

from headwater.modeler import ClickHouse

from ._app import create_app
from ._clickhouse import migrate
from ._dedupe import Claim, DedupeStore, MemoryDedupeStore, RedisDedupeStore
from ._errors import (
    BadPayload,
    ConfigError,
    DedupeUnavailable,
    GatewayError,
    Overloaded,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    SinkUnavailable,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from ._gateway import Gateway
from ._settings import Settings

__all__ = [
    "BadPayload",
    "Claim",
    "ClickHouse",
    "ConfigError",
    "DedupeStore",
    "DedupeUnavailable",
    "Gateway",
    "GatewayError",
    "MemoryDedupeStore",
    "Overloaded",
    "PayloadTooLarge",
    "RedisDedupeStore",
    "RequestError",
    "RequestTimeout",
    "Settings",
    "SinkUnavailable",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "create_app",
    "migrate",
]
