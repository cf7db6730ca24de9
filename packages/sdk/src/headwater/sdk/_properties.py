"""Finding the property that the wire format cannot carry, to name it in the error."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec

_LEAVES = (
    str,
    int,
    bool,
    type(None),
    bytes,
    bytearray,
    dt.datetime,
    dt.date,
    dt.time,
    dt.timedelta,
    uuid.UUID,
    decimal.Decimal,
    enum.Enum,
)


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        yield from ((str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple | set | frozenset):
        yield from ((f"[{i}]", v) for i, v in enumerate(value))
    elif isinstance(value, msgspec.Struct):
        yield from ((f, getattr(value, f)) for f in value.__struct_fields__)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        yield from ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))


def _problem(value: Any, *, json: bool) -> str | None:
    if isinstance(value, float):
        if json and not math.isfinite(value):
            return f"is {value}, which JSON cannot carry (send None or a string)"
        return None
    if isinstance(value, _LEAVES):
        return None
    if isinstance(value, dict | list | tuple | set | frozenset | msgspec.Struct):
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return None
    return f"has type {type(value).__name__}, which has no wire representation"


def find_unencodable(value: Any, *, json: bool, path: str = "properties") -> str | None:
    """`'properties.items[2].price is nan, …'` for the first bad value, or None."""
    problem = _problem(value, json=json)
    if problem is not None:
        return f"{path} {problem}"
    for key, child in _children(value):
        sep = "" if key.startswith("[") else "."
        found = find_unencodable(child, json=json, path=f"{path}{sep}{key}")
        if found is not None:
            return found
    return None
