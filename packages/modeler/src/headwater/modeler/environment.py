"""Settings from `HEADWATER_*` variables and the TOML file `HEADWATER_CONFIG` names, read
one way for the gateway and the modeler.

A field `name` of a settings Struct is set by the variable `HEADWATER_NAME`, or by the key
`name` of the TOML file; the environment wins over the file, and the Struct's default
over neither. The values are converted into the Struct at once, and an error names the
variable. What `HEADWATER_CLICKHOUSE_URL` may be, and its default, are written here too,
so that both programs default to, and refuse, the same URLs.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from ._clickhouse import redact
from ._errors import ConfigError

PREFIX = "HEADWATER_"
EMBEDDED_DIRECTORY = Path(".headwater", "clickhouse")  # under the working directory

SettingsT = TypeVar("SettingsT", bound=msgspec.Struct)


def read_environment(
    settings: type[msgspec.Struct],
    environ: Mapping[str, str],
    *,
    parse: Mapping[str, Callable[[str], Any]] | None = None,
) -> dict[str, Any]:
    """The values of `settings`' fields from `environ` and the `HEADWATER_CONFIG` file (the
    environment's win), not yet converted. A variable's text goes through `parse[name]`
    where the field has no text form of its own (`a:b,c:d` pairs, comma-separated lists)."""
    parse = parse or {}
    values: dict[str, Any] = {}
    if path := environ.get(PREFIX + "CONFIG"):
        values.update(_read_toml(Path(path)))
    for field in msgspec.structs.fields(settings):
        raw = environ.get(PREFIX + field.name.upper())
        if raw is not None:
            values[field.name] = parse[field.name](raw) if field.name in parse else raw
    return values


def convert(values: Mapping[str, Any], settings: type[SettingsT]) -> SettingsT:
    """`values` as a `settings` Struct (numbers and flags read from text); a value that does
    not fit, or that the Struct refuses, is a ConfigError naming its variable."""
    try:
        return msgspec.convert(values, settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"bad setting: {_name_field(str(exc))}") from exc


def default_clickhouse_url(cwd: Path | None = None) -> str:
    """chDB in `.headwater/clickhouse` under the working directory (or `cwd`)."""
    return f"chdb://{(cwd or Path.cwd()) / EMBEDDED_DIRECTORY}"


def embedded_directory(url: str) -> Path | None:
    """The directory of a `chdb:///abs/dir` URL; None for a server's URL."""
    if not url.startswith("chdb://"):
        return None
    return Path(url.removeprefix("chdb://").partition("?")[0])


def clickhouse_url_problem(url: str) -> str | None:
    """What is wrong with a `HEADWATER_CLICKHOUSE_URL`, in words without its credentials, or
    None. A relative chDB directory is refused: chDB would resolve it against whichever
    directory the program happens to start in, and create it there."""
    directory = embedded_directory(url)
    if directory is not None:
        if directory.is_absolute():
            return None
        return f"HEADWATER_CLICKHOUSE_URL must be chdb:///absolute/dir, got {redact(url)}"
    if url.startswith(("http://", "https://")):
        return None
    return (
        "HEADWATER_CLICKHOUSE_URL must be chdb:///abs/dir or http(s)://user:pass@host:port/db,"
        f" got {redact(url)!r}"
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"HEADWATER_CONFIG={path}: {exc}") from exc


def _name_field(message: str) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.commit_max_rows`": name the variable.
    head, _, where = message.partition(" - at `$.")
    field = where.rstrip("`").split(".")[0].split("[")[0]
    return f"{PREFIX}{field.upper()}: {head}" if field else message
