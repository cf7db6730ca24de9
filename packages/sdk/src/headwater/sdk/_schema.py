"""Tracking plans: JSON Schema for an application's typed events."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from ._errors import HeadwaterError
from ._event import Event, event_name

PLAN_VERSION = 1


class PlanError(HeadwaterError):
    """A target of `headwater schema export` names nothing that can be exported."""


def load_events(target: str) -> list[type[Event]]:
    """The Event classes named by `module:Class`, or every one defined in `module`."""
    module_name, _, attribute = target.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # like `python -m`: the project's own modules
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PlanError(f"cannot import {module_name!r}: {exc}") from exc
    if attribute:
        found = getattr(module, attribute, None)
        if not (inspect.isclass(found) and issubclass(found, Event) and found is not Event):
            raise PlanError(f"{target!r} is not an Event subclass")
        return [found]
    events = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, Event)
        and value is not Event
        and value.__module__ == module.__name__
    ]
    if not events:
        raise PlanError(f"module {module_name!r} defines no Event subclass")
    return events


def tracking_plan(events: Iterable[type[Event]]) -> dict[str, Any]:
    """A JSON Schema document: `events` maps each event name to its properties' schema."""
    classes = list(dict.fromkeys(events))
    by_name: dict[str, type[Event]] = {}
    for cls in classes:
        name = event_name(cls)
        if name in by_name and by_name[name] is not cls:
            raise PlanError(
                f"event name {name!r} is declared twice: {by_name[name].__qualname__} and "
                f"{cls.__qualname__}"
            )
        by_name[name] = cls
    refs, components = msgspec.json.schema_components(classes, ref_template="#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Headwater tracking plan",
        "x-headwater-plan-version": PLAN_VERSION,
        "events": {event_name(cls): ref for cls, ref in zip(classes, refs, strict=True)},
        "$defs": components,
    }


def export_plan(targets: Iterable[str]) -> bytes:
    """The tracking plan of every target, as formatted JSON."""
    events = [cls for target in targets for cls in load_events(target)]
    return msgspec.json.format(msgspec.json.encode(tracking_plan(events)), indent=2) + b"\n"
