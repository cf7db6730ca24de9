"""Where the modeler finds ClickHouse and its configuration (the same `HEADWATER_*`
variables as the gateway), as one value built at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from ._config import ModelConfig
from ._errors import ConfigError
from ._lock import FileLock, RedisLock, RunLock


class ModelerSettings(msgspec.Struct, frozen=True, kw_only=True):
    clickhouse_url: str
    clickhouse_database: str = "headwater"
    redis_url: str = ""
    models: str = ""  # HEADWATER_MODELS: the model configuration file (TOML)

    def __post_init__(self) -> None:
        if not self.clickhouse_url.startswith(("chdb://", "http://", "https://")):
            raise ConfigError(
                "HEADWATER_CLICKHOUSE_URL must be chdb:///abs/dir or http(s)://…,"
                f" got {self.clickhouse_url!r}"
            )
        if not self.clickhouse_database.replace("_", "").isalnum():
            raise ConfigError(
                f"HEADWATER_CLICKHOUSE_DATABASE must be letters, digits and _,"
                f" got {self.clickhouse_database!r}"
            )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, cwd: Path | None = None
    ) -> ModelerSettings:
        env = os.environ if environ is None else environ
        default = f"chdb://{(cwd or Path.cwd()) / '.headwater' / 'clickhouse'}"
        return cls(
            clickhouse_url=env.get("HEADWATER_CLICKHOUSE_URL") or default,
            clickhouse_database=env.get("HEADWATER_CLICKHOUSE_DATABASE") or "headwater",
            redis_url=env.get("HEADWATER_REDIS_URL", ""),
            models=env.get("HEADWATER_MODELS", ""),
        )

    def model_config(self) -> ModelConfig:
        return ModelConfig.load(Path(self.models) if self.models else None)

    def run_lock(self) -> RunLock:
        """A file lock beside an embedded database; a Redis lock for a shared server."""
        if self.clickhouse_url.startswith("chdb://"):
            directory = Path(self.clickhouse_url.removeprefix("chdb://"))
            return FileLock(directory.parent / f"modeler-{self.clickhouse_database}.lock")
        if self.redis_url:
            return RedisLock(self.redis_url, key=f"hw:modeler:{self.clickhouse_database}")
        return FileLock(Path.cwd() / ".headwater" / f"modeler-{self.clickhouse_database}.lock")
