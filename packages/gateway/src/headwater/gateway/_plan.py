"""Tracking plans: the JSON Schema of a project's typed events (`headwater schema export`).

A plan maps event names to the schema of their properties. `check()` says what is wrong
with an event against it; what happens then (reject, flag, count) is the policy's call.
Event names starting with `$` (identify, alias, page views …) are not the plan's business.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema_rs
import msgspec

from ._errors import ConfigError
from ._events import Incoming

UNKNOWN = "unknown event"
_properties = msgspec.json.Decoder(dict[str, Any])


class TrackingPlan:
    """Validators for one project's events, compiled once."""

    def __init__(self, document: dict[str, Any]) -> None:
        events = document.get("events")
        if not isinstance(events, dict):
            raise ConfigError(
                "a tracking plan needs an `events` object (see `headwater schema export`)"
            )
        defs = document.get("$defs", {})
        try:
            self._validators = {
                name: jsonschema_rs.validator_for({**ref, "$defs": defs})
                for name, ref in events.items()
            }
        except (ValueError, jsonschema_rs.ReferencingError) as exc:
            raise ConfigError(f"the tracking plan is not valid JSON Schema: {exc}") from exc

    @classmethod
    def load(cls, path: Path) -> TrackingPlan:
        """Read a plan file; a missing or malformed one stops start-up with its name."""
        try:
            document = msgspec.json.decode(path.read_bytes())
        except (OSError, msgspec.DecodeError) as exc:
            raise ConfigError(f"tracking plan {path}: {exc}") from exc
        if not isinstance(document, dict):
            raise ConfigError(f"tracking plan {path}: not a JSON object")
        return cls(document)

    def check(self, event: str, properties: dict[str, Any]) -> str | None:
        """None when `event` follows the plan; else what is wrong (`UNKNOWN` for a new name)."""
        if event.startswith("$"):
            return None
        validator = self._validators.get(event)
        if validator is None:
            return UNKNOWN
        for error in validator.iter_errors(properties):
            where = ".".join(str(p) for p in error.instance_path)
            return f"properties{'.' + where if where else ''}: {error.message}"
        return None


class PlanEnforcer:
    """Applies each project's tracking plan with the configured policies.

    `violations` policy (a known event breaking its schema) and `unknown` policy (a name
    the plan does not list): `reject` refuses the event, `flag` stores it with
    `properties["$plan_violation"]`, `count` only counts it; unknown names may be `allow`ed.
    """

    def __init__(
        self,
        plans: dict[str, TrackingPlan],
        *,
        violations: str,
        unknown: str,
        count: Callable[[str, str], None],
    ) -> None:
        self._plans = plans
        self._violations = violations
        self._unknown = unknown
        self._count = count

    @classmethod
    def from_files(
        cls,
        files: dict[str, str],
        *,
        violations: str,
        unknown: str,
        count: Callable[[str, str], None],
    ) -> PlanEnforcer:
        plans = {project: TrackingPlan.load(Path(path)) for project, path in files.items()}
        return cls(plans, violations=violations, unknown=unknown, count=count)

    def covers(self, project: str) -> bool:
        """Whether `project` has a plan (its events are read one by one)."""
        return project in self._plans

    def review(self, project: str, item: Incoming) -> str | None:
        """The reason to refuse the event, or None (a flagged event's properties gain a key)."""
        plan = self._plans.get(project)
        if plan is None or not isinstance(item.event, str):
            return None
        if isinstance(item.properties, msgspec.Raw):  # kept as sent until a plan reads them
            try:
                item.properties = _properties.decode(item.properties)
            except msgspec.DecodeError as exc:  # valid JSON Python cannot hold (1e999)
                if item.event.startswith("$"):  # not the plan's business
                    return None
                return self._apply(project, f"properties cannot be read: {exc}", None)
        if not isinstance(item.properties, dict):
            return None
        problem = plan.check(item.event, item.properties)
        return None if problem is None else self._apply(project, problem, item.properties)

    def _apply(self, project: str, problem: str, properties: dict[str, Any] | None) -> str | None:
        """The policy for `problem`: the reason to refuse, or None once counted or flagged
        (properties the plan could not read have no object to flag: stored as sent)."""
        policy = self._unknown if problem == UNKNOWN else self._violations
        if policy == "allow":
            return None
        self._count(project, policy)
        if policy == "reject":
            return f"tracking plan: {problem}"
        if policy == "flag" and properties is not None:
            properties["$plan_violation"] = problem
        return None
