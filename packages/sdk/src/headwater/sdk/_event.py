"""Typed events: an application declares each of its events as a class.

```python
class OrderCompleted(Event, name="order_completed"):
    order_id: str
    revenue_cents: int
    coupon: str | None = None
```

An `Event` is a keyword-only msgspec Struct, so a type checker rejects a
missing or mistyped property and msgspec encodes it without a detour through a dict.
Without `name=`, the event name is the class name in snake case.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, dataclass_transform

import msgspec

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(class_name: str) -> str:
    """`OrderCompleted` -> `order_completed`, `HTTPRequestSent` -> `http_request_sent`."""
    return _CAMEL_BOUNDARY.sub("_", class_name).lower()


class _EventMeta(msgspec.StructMeta):
    """Takes the `name=` class keyword, which msgspec's own metaclass does not know."""

    def __new__(
        mcls,
        cls_name: str,
        bases: tuple[type, ...],
        namespace: dict[str, Any],
        /,
        *,
        name: str | None = None,
        **struct_options: Any,
    ) -> Any:
        # kw_only=True on a base covers only its own fields: every event class needs it.
        struct_options.setdefault("kw_only", True)
        cls: Any = super().__new__(mcls, cls_name, bases, namespace, **struct_options)
        cls.__event_name__ = snake_case(cls_name) if name is None else name
        return cls


@dataclass_transform(kw_only_default=True, field_specifiers=(msgspec.field,))
class Event(msgspec.Struct, metaclass=_EventMeta, kw_only=True):
    """Base class of typed events; the fields are the event's properties."""

    __event_name__: ClassVar[str]

    def __init_subclass__(cls, *, name: str | None = None, **struct_options: Any) -> None:
        # `name` is consumed by the metaclass; declared here so type checkers accept it.
        super().__init_subclass__(**struct_options)


def event_name(event: Event | type[Event]) -> str:
    """The wire name of a typed event or event class."""
    return event.__event_name__
