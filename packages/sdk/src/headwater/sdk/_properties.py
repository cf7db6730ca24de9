"""Finding the property that the wire format cannot carry, to name it in the error."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import math
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import msgspec.inspect

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


def may_hold_non_finite(value: Any) -> bool:
    """False for a typed event whose fields cannot hold a float: no scan needed at all."""
    return not (isinstance(value, msgspec.Struct) and _float_free(type(value)))


def holds_non_finite(value: Any) -> bool:
    """Whether a NaN or an infinity hides anywhere in `value` (the hot path's quick scan)."""
    kind = type(value)
    if kind is float:
        return not math.isfinite(value)
    if kind is dict:
        values: Any = value.values()
    elif kind is list or kind is tuple:
        values = value
    elif isinstance(value, msgspec.Struct):
        if _float_free(type(value)):
            return False
        values = [getattr(value, f) for f in value.__struct_fields__]
    elif kind in _SCALARS:
        return False
    else:
        values = [child for _, child in _children(value)]
    return any(holds_non_finite(child) for child in values)


_SCALARS = frozenset({str, int, bool, type(None)})

_FLOAT_FREE_LEAVES = (
    msgspec.inspect.StrType,
    msgspec.inspect.IntType,
    msgspec.inspect.BoolType,
    msgspec.inspect.NoneType,
    msgspec.inspect.BytesType,
    msgspec.inspect.DateTimeType,
    msgspec.inspect.DateType,
    msgspec.inspect.TimeType,
    msgspec.inspect.TimeDeltaType,
    msgspec.inspect.UUIDType,
    msgspec.inspect.DecimalType,
    msgspec.inspect.EnumType,
    msgspec.inspect.LiteralType,
)


@functools.cache
def _float_free(struct_type: type[msgspec.Struct]) -> bool:
    """Whether no field of `struct_type`, however nested, can hold a float (so no NaN)."""
    try:
        info = msgspec.inspect.type_info(struct_type)
    except (TypeError, ValueError, NameError):
        return False
    return _type_float_free(info, set())


def _type_float_free(info: msgspec.inspect.Type, seen: set[type]) -> bool:
    if isinstance(info, _FLOAT_FREE_LEAVES):
        return True
    children: list[msgspec.inspect.Type]
    if isinstance(info, msgspec.inspect.StructType):
        if info.cls in seen:
            return True
        seen.add(info.cls)
        children = [f.type for f in info.fields]
    elif isinstance(info, msgspec.inspect.UnionType):
        children = list(info.types)
    elif isinstance(info, msgspec.inspect.ListType | msgspec.inspect.SetType):
        children = [info.item_type]
    elif isinstance(info, msgspec.inspect.DictType):
        children = [info.value_type]
    else:
        return False  # float, Any, tuples, dataclasses …: scan the values
    return all(_type_float_free(child, seen) for child in children)
