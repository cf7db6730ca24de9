"""`headwater replay-errors`: send refused events through ingestion again, after a fix
(a new write key, a corrected tracking plan, a raised limit, a wider event-time window)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import msgspec

from ._errors import RequestError
from ._events import Columns, Context, Incoming, Invalid, parse_sent_at
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


def _items(source: str, index: int, payload: bytes) -> tuple[list[Incoming | Invalid], Any]:
    """Parse a kept payload as its endpoint family would: one event, or a whole body (-1);
    with the body's `sent_at` (a lone event's was not kept)."""
    if source == "posthog":  # one event is a body of its own
        posthog = parse_posthog(payload)
        return posthog.items, posthog.sent_at if index < 0 else None
    body = payload if index < 0 else b'{"batch":[' + payload + b"]}"
    if source == "native":
        items, sent_at, _ = parse_native(body, "json")
        return (items.items() if isinstance(items, Columns) else items), sent_at
    segment = parse_segment(body, kind=None)
    return segment.items, segment.sent_at if index < 0 else None


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
        "SELECT toString(error_id), project, source, event_index, payload, received_at"  # noqa: S608 - validated name
        f" FROM {db}.ingest_errors WHERE replayed_at IS NULL"
        " AND (%(project)s = '' OR project = %(project)s)"
        " AND received_at >= %(since)s ORDER BY received_at LIMIT %(limit)s",
        {"project": project or "", "since": since or datetime(1970, 1, 1), "limit": limit},
    )
    report = ReplayReport(read=len(rows))
    reasons: Counter[str] = Counter()
    done: list[str] = []
    for error_id, row_project, source, index, payload, received_at in rows:
        try:
            items, sent_at = _items(source, index, payload.encode())
        except RequestError as exc:
            reasons[str(exc)] += 1
            continue
        # an event without a time gets the time it was first received (a lone event's
        # clock-skew correction is lost: its body's sent_at was not kept); its time is
        # judged by this gateway's window around that first arrival, so a window widened
        # since then stores it
        ctx = Context(
            project=row_project,
            source=source,
            lib="headwater-replay",
            received_at=received_at.replace(tzinfo=UTC),
            sent_at=parse_sent_at(sent_at),
            max_event_bytes=gateway.settings.max_event_bytes,
            window=gateway.window,
        )
        result = await gateway.ingestor.ingest(ctx, items, keep_rejected=False)
        report.stored += result.accepted
        report.duplicates += result.duplicates
        reasons.update(r.reason for r in result.rejected)
        if not result.rejected:
            done.append(error_id)
    if done:
        gateway.clickhouse.command(mark_replayed(db, gateway.clickhouse.cluster), {"ids": done})
    report.still_invalid = sum(reasons.values())
    report.reasons = dict(reasons.most_common())
    return report


def mark_replayed(db: str, cluster: str) -> str:
    """The mutation that marks replayed rows; on a cluster, of each shard's local table (a
    Distributed table takes no mutation)."""
    table = f"{db}.ingest_errors_local ON CLUSTER '{cluster}'" if cluster else f"{db}.ingest_errors"
    return (
        f"ALTER TABLE {table} UPDATE replayed_at = now64(3)"
        " WHERE error_id IN %(ids)s SETTINGS mutations_sync = 2"
    )
