"""Headwater's modeler: turns the raw `events` table into a star schema, daily aggregates,
active users, retention cohorts and funnels, incrementally and idempotently."""

from ._alerts import CheckOutcome
from ._clickhouse import ClickHouse, redact
from ._config import (
    Accuracy,
    AnyCheck,
    Check,
    Completeness,
    Consistency,
    Custom,
    Distribution,
    Freshness,
    Funnel,
    ModelConfig,
    PostgresConsistency,
    SchemaDrift,
    Uniqueness,
    Volume,
)
from ._errors import ConfigError, ModelerError, ModelFailed, RunLocked, WarehouseUnavailable
from ._health import (
    GatewayTotals,
    HealthRules,
    Monitor,
    PipelineHealth,
    Signal,
    alert_dispatcher,
    gateway_totals,
    healthy,
    pipeline_health,
    signals,
)
from ._lock import FileLock, RedisLock, RunLock
from ._models import MODELS, Model
from ._quality import run_checks
from ._runner import ModelResult, Runner, RunReport
from ._schedule import Scheduler, Timer
from ._settings import ModelerSettings

__all__ = [
    "MODELS",
    "Accuracy",
    "AnyCheck",
    "Check",
    "CheckOutcome",
    "ClickHouse",
    "Completeness",
    "ConfigError",
    "Consistency",
    "Custom",
    "Distribution",
    "FileLock",
    "Freshness",
    "Funnel",
    "GatewayTotals",
    "HealthRules",
    "Model",
    "ModelConfig",
    "ModelFailed",
    "ModelResult",
    "ModelerError",
    "ModelerSettings",
    "Monitor",
    "PipelineHealth",
    "PostgresConsistency",
    "RedisLock",
    "RunLock",
    "RunLocked",
    "RunReport",
    "Runner",
    "Scheduler",
    "SchemaDrift",
    "Signal",
    "Timer",
    "Uniqueness",
    "Volume",
    "WarehouseUnavailable",
    "alert_dispatcher",
    "gateway_totals",
    "healthy",
    "pipeline_health",
    "redact",
    "run_checks",
    "signals",
]
