"""Where the modeler finds ClickHouse, its configuration and its alert channels, as one
value built at start-up: the same `HEADWATER_*` variables and `HEADWATER_CONFIG` file as
the gateway, read the same way (`headwater.modeler.environment`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from ._alerts import AlertChannel, JsonWebhook, SlackWebhook, SmtpEmail
from ._config import ModelConfig
from ._errors import ConfigError
from ._lock import FileLock, RedisLock, RunLock
from .environment import (
    clickhouse_url_problem,
    convert,
    default_clickhouse_url,
    embedded_directory,
    read_environment,
)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class ModelerSettings(msgspec.Struct, frozen=True, kw_only=True):
    clickhouse_url: str
    clickhouse_database: str = "headwater"
    redis_url: str = ""
    models: str = ""  # HEADWATER_MODELS: the model configuration file (TOML)
    # Alert channels: each one configured is used; none configured means no alert is sent.
    alert_slack_url: str = ""  # HEADWATER_ALERT_SLACK_URL: a Slack incoming webhook
    alert_webhook_url: str = ""  # HEADWATER_ALERT_WEBHOOK_URL: a generic JSON webhook
    alert_smtp_host: str = ""  # HEADWATER_ALERT_SMTP_HOST: email alerts when set
    alert_smtp_port: int = 25
    alert_smtp_from: str = ""
    alert_smtp_to: tuple[str, ...] = ()  # HEADWATER_ALERT_SMTP_TO: comma-separated
    alert_smtp_starttls: bool = False
    alert_smtp_user: str = ""
    alert_smtp_password: str = ""
    gateway_metrics_url: str = ""  # HEADWATER_GATEWAY_METRICS_URL: for `headwater health`

    def __post_init__(self) -> None:
        if problem := clickhouse_url_problem(self.clickhouse_url):
            raise ConfigError(problem)
        if not self.clickhouse_database.replace("_", "").isalnum():
            raise ConfigError(
                f"HEADWATER_CLICKHOUSE_DATABASE must be letters, digits and _,"
                f" got {self.clickhouse_database!r}"
            )
        _check_url("HEADWATER_ALERT_SLACK_URL", self.alert_slack_url)
        _check_url("HEADWATER_ALERT_WEBHOOK_URL", self.alert_webhook_url)
        _check_url("HEADWATER_GATEWAY_METRICS_URL", self.gateway_metrics_url)
        self._check_smtp()

    def _check_smtp(self) -> None:
        if not 0 < self.alert_smtp_port < 65536:
            raise ConfigError(
                f"HEADWATER_ALERT_SMTP_PORT must be 1..65535, got {self.alert_smtp_port}"
            )
        if not self.alert_smtp_host:
            return
        if "@" not in self.alert_smtp_from:
            raise ConfigError(
                "HEADWATER_ALERT_SMTP_FROM must be an email address when"
                f" HEADWATER_ALERT_SMTP_HOST is set, got {self.alert_smtp_from!r}"
            )
        if not self.alert_smtp_to or not all("@" in to for to in self.alert_smtp_to):
            raise ConfigError(
                "HEADWATER_ALERT_SMTP_TO must be comma-separated email addresses when"
                f" HEADWATER_ALERT_SMTP_HOST is set, got {','.join(self.alert_smtp_to)!r}"
            )

    def __repr__(self) -> str:  # webhook paths, passwords and URL credentials are secrets
        return (
            f"ModelerSettings(clickhouse_database={self.clickhouse_database!r},"
            f" alert channels: {self.alert_channel_names() or 'none'})"
        )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, cwd: Path | None = None
    ) -> ModelerSettings:
        """Settings from `HEADWATER_*` variables and the TOML file `HEADWATER_CONFIG` names
        (the environment wins); a bad value is a ConfigError naming its variable."""
        env = os.environ if environ is None else environ
        values = read_environment(cls, env, parse=_PARSE)
        if not values.get("clickhouse_url"):
            values["clickhouse_url"] = default_clickhouse_url(cwd)
        return convert(values, cls)

    def model_config(self) -> ModelConfig:
        return ModelConfig.load(Path(self.models) if self.models else None)

    def run_lock(self) -> RunLock:
        """A file lock beside an embedded database; a Redis lock for a shared server."""
        if (directory := embedded_directory(self.clickhouse_url)) is not None:
            return FileLock(directory.parent / f"modeler-{self.clickhouse_database}.lock")
        if self.redis_url:
            return RedisLock(self.redis_url, key=f"hw:modeler:{self.clickhouse_database}")
        return FileLock(Path.cwd() / ".headwater" / f"modeler-{self.clickhouse_database}.lock")

    def alert_channel_names(self) -> str:
        """The configured channels in words, e.g. `slack, email` (no secret in it)."""
        configured = {
            "slack": self.alert_slack_url,
            "webhook": self.alert_webhook_url,
            "email": self.alert_smtp_host,
        }
        return ", ".join(name for name, value in configured.items() if value)

    def alert_channels(self) -> list[AlertChannel]:
        """One channel per configured destination (none: alerts are decided but not sent)."""
        channels: list[AlertChannel] = []
        if self.alert_slack_url:
            channels.append(SlackWebhook(self.alert_slack_url))
        if self.alert_webhook_url:
            channels.append(JsonWebhook(self.alert_webhook_url))
        if self.alert_smtp_host:
            channels.append(
                SmtpEmail(
                    self.alert_smtp_host,
                    self.alert_smtp_port,
                    self.alert_smtp_from,
                    self.alert_smtp_to,
                    starttls=self.alert_smtp_starttls,
                    username=self.alert_smtp_user or None,
                    password=self.alert_smtp_password or None,
                )
            )
        return channels


def _check_url(variable: str, url: str) -> None:
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{variable} must be an http(s) URL, got {parts.scheme or url!r}")


def _port(raw: str) -> int:
    if not raw.strip().isdecimal():
        raise ConfigError(f"HEADWATER_ALERT_SMTP_PORT must be a port number, got {raw!r}")
    return int(raw)


def _flag(raw: str) -> bool:
    if raw.strip().lower() not in _TRUE | _FALSE:
        raise ConfigError(f"HEADWATER_ALERT_SMTP_STARTTLS must be true or false, got {raw!r}")
    return raw.strip().lower() in _TRUE


def _addresses(raw: str) -> tuple[str, ...]:
    return tuple(to.strip() for to in raw.split(",") if to.strip())


# The variables whose text is not their field's value as msgspec reads text.
_PARSE: Mapping[str, Callable[[str], Any]] = {
    "alert_smtp_port": _port,
    "alert_smtp_starttls": _flag,
    "alert_smtp_to": _addresses,
}
