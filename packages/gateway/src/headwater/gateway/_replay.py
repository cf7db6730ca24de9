"""`headwater replay-errors`: send refused events through ingestion again, after a fix
(a new write key, a corrected tracking plan, a raised limit)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import msgspec

from ._errors import RequestError
from ._events import Context, Incoming, Invalid, now
from ._gateway import Gateway
from ._native import parse_native
from ._posthog import parse_posthog
from ._segment import parse_segment


class ReplayReport(msgspec.Struct, kw_only=True):
    """What a replay did with the rows it read."""

    read: int = 0
    stored: int = 0
    duplicates: int = 0
    still_invalid: int = 0
    reasons: dict[str, int] = msgspec.field(default_factory=dict)


def _items(source: str, index: int, payload: bytes) -> list[Incoming | Invalid]:
    """Parse a kept payload as its endpoint family would: one event, or a whole body (-1)."""
    if source == "native":
        body = payload if index < 0 else b'{"batch":[' + payload + b"]}"
        return parse_native(body, "json")[0]
    if source == "posthog":
        return parse_posthog(payload).items
    body = payload if index < 0 else b'{"batch":[' + payload + b"]}"
    return parse_segment(body, kind=None).items


async def replay_errors(
    gateway: Gateway,
    *,
    project: str | None = None,
    since: datetime | None = None,
    limit: int = 10_000,
) -> ReplayReport:
    """Re-ingest unreplayed rows of `ingest_errors`; the ones stored are marked replayed."""
    db = gateway.clickhouse.database
    rows = gateway.clickhouse.rows(
        f"SELECT toString(error_id), project, source, event_index, payload"  # noqa: S608 - validated name
        f" FROM {db}.ingest_errors WHERE replayed_at IS NULL"
        " AND (%(project)s = '' OR project = %(project)s)"
        " AND received_at >= %(since)s ORDER BY received_at LIMIT %(limit)s",
        {"project": project or "", "since": since or datetime(1970, 1, 1), "limit": limit},
    )
    report = ReplayReport(read=len(rows))
    reasons: Counter[str] = Counter()
    done: list[str] = []
    for error_id, row_project, source, index, payload in rows:
        try:
            items = _items(source, index, payload.encode())
        except RequestError as exc:
            reasons[str(exc)] += 1
            continue
        result = await gateway.ingestor.ingest(
            _context(row_project, source, gateway), items, keep_rejected=False
        )
        report.stored += result.accepted
        report.duplicates += result.duplicates
        reasons.update(r.reason for r in result.rejected)
        if not result.rejected:
            done.append(error_id)
    if done:
        gateway.clickhouse.command(
            f"ALTER TABLE {db}.ingest_errors UPDATE replayed_at = now64(3)"
            " WHERE error_id IN %(ids)s SETTINGS mutations_sync = 1",
            {"ids": done},
        )
    report.still_invalid = sum(reasons.values())
    report.reasons = dict(reasons.most_common())
    return report


def _context(project: str, source: str, gateway: Gateway) -> Context:
    return Context(
        project=project,
        source=source,
        lib="headwater-replay",
        received_at=now(),
        sent_at=None,
        max_event_bytes=gateway.settings.max_event_bytes,
    )
