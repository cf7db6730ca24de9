"""What the forwarder reads and writes in ClickHouse: the stored events after a project's
cursor, the cursors themselves, and the dead letters PostHog refused for good.

Rows are read in the order they were stored, `(inserted_at, event_id)`, and only once
they are `settle` seconds old: `inserted_at` is stamped when an insert begins, and an
insert still running when the forwarder passes its time would otherwise be skipped. The
time is ClickHouse's own on both sides, so the gateways' clocks do not matter.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from headwater.modeler import ClickHouse

from ._clickhouse import CURSOR_COLUMNS, FORWARD_DEAD_LETTER_COLUMNS

# The epoch: where a project without a cursor starts, written once, the first time any
# forwarder runs on the database (an upgraded deployment does not send its history again).
EPOCH = ""
NIL_ID = "00000000-0000-0000-0000-000000000000"

_encode = msgspec.json.Encoder().encode

# A project's rows past a cursor. The plain bound lets the min-max index on `inserted_at`
# skip old granules; the tuple is the order.
_PAST_CURSOR = (
    "project = %(project)s"
    " AND inserted_at >= toDateTime64(%(at)s, 3, 'UTC')"
    " AND (inserted_at, event_id) > (toDateTime64(%(at)s, 3, 'UTC'), toUUID(%(id)s))"
)


class Cursor(NamedTuple):
    """A place in a project's stored events: everything up to it has been forwarded.
    Its time is ClickHouse's text for a DateTime64(3) in UTC: `2026-12-01 09:30:00.250`."""

    inserted_at: str
    event_id: str


class StoredEvent(NamedTuple):
    """One row of `events`, as the forwarder needs it (times as ClickHouse writes a
    DateTime64(3) in UTC: `2026-12-01 09:30:00.250`; Python's datetimes cost more than the
    rest of the row)."""

    event_id: str
    event: str
    distinct_id: str
    timestamp: str
    properties: str
    inserted_at: str

    @property
    def cursor(self) -> Cursor:
        """The cursor just past this row."""
        return Cursor(self.inserted_at, self.event_id)


class DeadLetter(NamedTuple):
    """An event PostHog refused for good (or that could not be made a message)."""

    row: StoredEvent
    status: int  # PostHog's answer; 0 when never sent
    reason: str
    message: str  # what was (or would have been) sent, as JSON


class Lag(NamedTuple):
    """How far a project's forwarding is behind: events not yet sent, and the age in
    seconds of the oldest of them (0 when none)."""

    events: int
    seconds: float


class ForwardStore:
    """The forwarder's reads and writes, in `clickhouse`'s database."""

    def __init__(self, clickhouse: ClickHouse, *, settle: float) -> None:
        self._ch = clickhouse
        self._db = clickhouse.database
        self._settle_ms = round(settle * 1000)

    def cursors(self) -> dict[str, Cursor]:
        """Every project's cursor, and the epoch (key `EPOCH`) once there is one."""
        found = self._ch.rows(
            "SELECT project, toString(max((inserted_at, event_id)).1),"  # noqa: S608
            f" toString(max((inserted_at, event_id)).2) FROM {self._db}.forward_cursors"
            " GROUP BY project"
        )
        return {project: Cursor(at, event_id) for project, at, event_id in found}

    def begin(self) -> Cursor:
        """Write the epoch (now, in ClickHouse's clock); return it."""
        now = self._ch.value("SELECT toString(now64(3))")
        epoch = Cursor(now, NIL_ID)
        self.advance(EPOCH, epoch)
        return epoch

    def advance(self, project: str, cursor: Cursor) -> None:
        """Record that `project`'s events up to `cursor` are forwarded."""
        line = _encode([project, cursor.inserted_at, cursor.event_id])
        self._ch.insert_lines("forward_cursors", CURSOR_COLUMNS, line + b"\n")

    def after(self, project: str, cursor: Cursor, limit: int) -> list[StoredEvent]:
        """Up to `limit` of `project`'s settled rows past `cursor`, oldest first."""
        found = self._ch.rows(
            "SELECT toString(event_id), event, distinct_id, toString(timestamp), properties,"  # noqa: S608
            " toString(inserted_at)"
            f" FROM {self._db}.events WHERE {self._settled_past_cursor}"
            f" ORDER BY inserted_at, event_id LIMIT {int(limit)}",
            self._parameters(project, cursor),
        )
        return [StoredEvent(*row) for row in found]

    def lag(self, project: str, cursor: Cursor) -> Lag:
        """How many of `project`'s stored rows are past `cursor`, and the oldest one's age
        (settled or not: the lag counts from the moment the event was stored)."""
        count, seconds = self._ch.rows(
            "SELECT count(), if(count() = 0, 0,"  # noqa: S608
            " dateDiff('millisecond', min(inserted_at), now64(3)) / 1000)"
            f" FROM {self._db}.events WHERE {_PAST_CURSOR}",
            self._parameters(project, cursor),
        )[0]
        return Lag(int(count), max(0.0, float(seconds)))

    def bury(self, project: str, letters: list[DeadLetter]) -> None:
        """Keep the events PostHog refused for good in `forward_dead_letters`."""
        lines = [
            _encode(
                [
                    project,
                    d.row.event_id,
                    d.row.event,
                    d.row.distinct_id,
                    d.row.timestamp,
                    d.row.inserted_at,
                    d.status,
                    d.reason,
                    d.message,
                ]
            )
            for d in letters
        ]
        body = b"\n".join(lines) + b"\n"
        self._ch.insert_lines("forward_dead_letters", FORWARD_DEAD_LETTER_COLUMNS, body)

    @property
    def _settled_past_cursor(self) -> str:
        return (
            f"{_PAST_CURSOR} AND inserted_at <= now64(3) - toIntervalMillisecond({self._settle_ms})"
        )

    @staticmethod
    def _parameters(project: str, cursor: Cursor) -> dict[str, str]:
        return {"project": project, "at": cursor.inserted_at, "id": cursor.event_id}
