"""Headwater's modeler: turns the raw `events` table into a star schema, daily aggregates,
active users, retention cohorts and funnels, incrementally and idempotently."""

from ._clickhouse import ClickHouse
from ._config import Funnel, ModelConfig
from ._errors import ConfigError, ModelerError, ModelFailed, RunLocked, WarehouseUnavailable
from ._lock import FileLock, RedisLock, RunLock
from ._models import MODELS, Model
from ._runner import ModelResult, Runner, RunReport
from ._schedule import Scheduler, Timer
from ._settings import ModelerSettings

__all__ = [
    "MODELS",
    "ClickHouse",
    "ConfigError",
    "FileLock",
    "Funnel",
    "Model",
    "ModelConfig",
    "ModelFailed",
    "ModelResult",
    "ModelerError",
    "ModelerSettings",
    "RedisLock",
    "RunLock",
    "RunLocked",
    "RunReport",
    "Runner",
    "Scheduler",
    "Timer",
    "WarehouseUnavailable",
]
