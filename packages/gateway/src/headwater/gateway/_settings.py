"""The gateway's settings: one typed value built from the environment at start-up.

Variables carry the `HEADWATER_` prefix (`HEADWATER_REDIS_URL` sets `redis_url`); a TOML
file named by `HEADWATER_CONFIG` may hold the same names in lower case (without the
prefix), and the environment wins over it.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import unquote, urlsplit

import msgspec

from headwater.modeler import ConfigError as SettingRefused
from headwater.modeler import redact
from headwater.modeler.environment import (
    clickhouse_url_problem,
    convert,
    default_clickhouse_url,
    read_environment,
)

from ._errors import ConfigError


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the gateway can be told."""

    clickhouse_url: str = ""
    clickhouse_database: str = "headwater"
    clickhouse_cluster: str = ""
    redis_url: str = ""
    redis_prefix: str = "hw"
    redis_failure: Literal["accept", "reject"] = "accept"
    write_keys: dict[str, str] = msgspec.field(default_factory=dict)
    posthog_host: str = ""
    posthog_api_key: str = ""
    # project → its own PostHog: "https://<api key>@<host>", an API key alone (at
    # `posthog_host`), or "off" (not forwarded); other projects go to the default above
    posthog_projects: dict[str, str] = msgspec.field(default_factory=dict)
    posthog_flags_timeout_seconds: float = 3.0
    dedupe_ttl_seconds: int = 7 * 24 * 3600
    dedupe_pending_seconds: int = 60
    max_batch_body_bytes: int = 20_000_000
    max_single_body_bytes: int = 2_000_000
    max_event_bytes: int = 1_000_000
    # The event-time window, around each event's arrival: an event whose skew-corrected
    # time lies further back or ahead is refused (kept in `ingest_errors`), never clamped;
    # the column's range, [1900-01-01, 2300-01-01), bounds it whatever these say.
    event_max_age_days: int = 3650
    event_max_future_hours: float = 23  # as PostHog's
    body_timeout_seconds: float = 30.0
    commit_max_rows: int = 50_000
    commit_max_bytes: int = 32_000_000
    commit_max_delay_ms: int = 10  # the least time between two inserts (parts per second)
    commit_queue_rows: int = 500_000
    insert_deadline_seconds: float = 10.0
    # Forwarding to PostHog reads the stored events (a cursor per project, in ClickHouse).
    forward_in_process: bool = True  # false: a separate `headwater forward` does it
    forward_batch_size: int = 500  # events per post
    forward_settle_seconds: float = 10.0  # rows younger than this wait (inserts in flight)
    forward_poll_seconds: float = 1.0  # how often an idle forwarder looks for new rows
    forward_backoff_cap_seconds: float = 30.0  # the longest wait between two failed posts
    forward_lease_seconds: float = 30.0  # the Redis lease of the one forwarding gateway
    tracking_plans: dict[str, str] = msgspec.field(default_factory=dict)  # project → plan file
    tracking_policy: Literal["reject", "flag", "count"] = "count"
    tracking_unknown: Literal["reject", "flag", "count", "allow"] = "count"
    demo_write_key: str = ""
    # Browser senders (posthog-js, analytics.js): origins allowed to read the answers,
    # comma-separated; "*" any origin, "https://*.example.com" a wildcard, "" none.
    cors_origins: str = "*"
    models: str = ""  # HEADWATER_MODELS: the model configuration file (TOML)
    model_schedule: bool = True  # embedded mode: run the models' schedule in this process

    def __post_init__(self) -> None:
        if problem := clickhouse_url_problem(self.clickhouse_url):
            raise ConfigError(problem)
        if self.redis_url and urlsplit(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"HEADWATER_REDIS_URL must be a redis:// URL, got {redact(self.redis_url)!r}"
            )
        if not self.clickhouse_database.replace("_", "").isalnum():
            raise ConfigError(
                f"HEADWATER_CLICKHOUSE_DATABASE must be letters, digits and _, "
                f"got {self.clickhouse_database!r}"
            )
        for project in self.write_keys.values():  # also a part of Redis dedupe keys
            if not project.isprintable() or not project or any(c.isspace() for c in project):
                raise ConfigError(
                    f"HEADWATER_WRITE_KEYS: project name {project!r} must be printable,"
                    " without spaces"
                )
        for origin in self.cors_origin_list:
            if origin != "*" and "://" not in origin:
                raise ConfigError(
                    f"HEADWATER_CORS_ORIGINS: {origin!r} is not an origin like"
                    " https://app.example.com (or * for any)"
                )
        self._check_posthog()
        self._check_numbers()

    def _check_numbers(self) -> None:
        for name in _POSITIVE:
            if not getattr(self, name) > 0:  # NaN is not either
                raise ConfigError(f"HEADWATER_{name.upper()} must be positive")
        if not self.forward_settle_seconds >= 0:
            raise ConfigError("HEADWATER_FORWARD_SETTLE_SECONDS must be 0 or more")

    def _check_posthog(self) -> None:
        if bool(self.posthog_host) != bool(self.posthog_api_key):
            unset = "HEADWATER_POSTHOG_API_KEY" if self.posthog_host else "HEADWATER_POSTHOG_HOST"
            raise ConfigError(
                f"{unset} is unset: forwarding needs HEADWATER_POSTHOG_HOST and _API_KEY both"
            )
        self.posthog_targets()  # a target that does not read is an error at start-up
        if self.posthog_flags_timeout_seconds <= 0:
            raise ConfigError("HEADWATER_POSTHOG_FLAGS_TIMEOUT_SECONDS must be positive")

    @property
    def cors_origin_list(self) -> list[str]:
        """The origins of `cors_origins`, without blanks."""
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def embedded(self) -> bool:
        """Whether ClickHouse runs in this process (chDB)."""
        return self.clickhouse_url.startswith("chdb://")

    @property
    def posthog_default(self) -> PostHogTarget | None:
        """Where events of a project without a target of its own are forwarded."""
        if not self.posthog_host:
            return None
        return PostHogTarget(self.posthog_host, self.posthog_api_key)

    def posthog_targets(self) -> dict[str, PostHogTarget | None]:
        """`posthog_projects` read: each project's PostHog, None for "off"."""
        projects = set(self.write_keys.values())
        targets: dict[str, PostHogTarget | None] = {}
        for project, target in self.posthog_projects.items():
            where = f"HEADWATER_POSTHOG_PROJECTS: project {project!r}"
            if project not in projects:
                raise ConfigError(f"{where} has no write key (HEADWATER_WRITE_KEYS)")
            targets[project] = _posthog_target(where, target.strip(), self.posthog_host)
        return targets

    def project_for(self, write_key: str) -> str | None:
        """The project a write key belongs to, or None for an unknown key."""
        return self.write_keys.get(write_key)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, cwd: Path | None = None
    ) -> Settings:
        """Settings from `HEADWATER_*` variables (and the TOML file `HEADWATER_CONFIG` names)."""
        env = os.environ if environ is None else environ
        try:
            values = read_environment(cls, env, parse=_PARSE)
            if not values.get("clickhouse_url"):
                values["clickhouse_url"] = default_clickhouse_url(cwd)
            if not values.get("write_keys"):
                demo = values.get("demo_write_key") or f"hw_demo_{secrets.token_hex(8)}"
                values["demo_write_key"] = demo
                values["write_keys"] = {demo: "demo"}
            return convert(values, cls)
        except SettingRefused as exc:  # the reader is the modeler's: its error, told as ours
            raise ConfigError(str(exc)) from exc


_POSITIVE = (
    "forward_batch_size",
    "forward_poll_seconds",
    "forward_backoff_cap_seconds",
    "forward_lease_seconds",
    "commit_max_rows",
    "commit_max_bytes",
    "commit_queue_rows",
    "max_event_bytes",
    "event_max_age_days",
    "event_max_future_hours",
)


class PostHogTarget(NamedTuple):
    """A PostHog project: its host and API key."""

    host: str
    api_key: str


class PostHogRoutes:
    """Which PostHog each project's events go to (read once from the settings)."""

    def __init__(self, settings: Settings) -> None:
        self._targets = settings.posthog_targets()
        self._default = settings.posthog_default
        self._projects = sorted(set(settings.write_keys.values()))

    @property
    def enabled(self) -> bool:
        """Whether any project's events go to a PostHog."""
        return any(self.target(project) for project in self._projects)

    def target(self, project: str) -> PostHogTarget | None:
        """The PostHog of `project`'s events; None: they are not forwarded."""
        return self._targets.get(project, self._default)

    def forwarded(self) -> list[tuple[str, PostHogTarget]]:
        """The projects whose events are forwarded, each with its PostHog."""
        found = [(project, self.target(project)) for project in self._projects]
        return [(project, target) for project, target in found if target is not None]


def _posthog_target(where: str, target: str, default_host: str) -> PostHogTarget | None:
    if target == "off":
        return None
    if "://" not in target:  # an API key alone: at the default host
        if not default_host:
            raise ConfigError(
                f"{where} names an API key alone, and HEADWATER_POSTHOG_HOST is unset:"
                " give https://<api key>@<host>"
            )
        if not target or any(c.isspace() or c in "/@" for c in target):
            raise ConfigError(f"{where}: neither an API key (no spaces, / or @), a URL nor off")
        return PostHogTarget(default_host, target)
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: the URL must be https://<api key>@<host>")
    if not parts.username or parts.password is not None:
        raise ConfigError(f"{where}: the URL must carry the API key, https://<api key>@<host>")
    host = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return PostHogTarget(host, unquote(parts.username))


_PAIRS = {
    "write_keys": "key1:project1,key2:project2",
    "tracking_plans": "project1:/plan.json,…",
    "posthog_projects": "project1:https://<api key>@<host>,project2:off",
}


def _pairs(name: str, raw: str) -> dict[str, str]:
    """`a:b,c:d` → {a: b, c: d} (split at the first colon, so paths may hold colons)."""
    pairs: dict[str, str] = {}
    for number, pair in enumerate(filter(None, (p.strip() for p in raw.split(","))), 1):
        key, sep, value = pair.partition(":")
        if not sep or not key or not value:  # not quoted: it may hold a key
            raise ConfigError(
                f"HEADWATER_{name.upper()} must be {_PAIRS[name]}; entry {number} is not"
            )
        pairs[key] = value
    return pairs


_PARSE = {name: functools.partial(_pairs, name) for name in _PAIRS}
