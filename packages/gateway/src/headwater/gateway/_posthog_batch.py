"""One batch to PostHog: stored rows made capture messages, posted with the `posthog`
library, and its answer read as sent, to try again, or refused for good."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
from posthog.request import APIError, batch_post

from ._forward_store import StoredEvent

Post = Callable[[str, str, list[dict[str, Any]]], None]  # (host, api_key, batch)

# Answers worth the same batch again: PostHog is busy, slow or down, not refusing it.
RETRIED_STATUSES = frozenset({408, 429})
TOO_LARGE = 413

_decode = msgspec.json.Decoder(dict[str, Any])


def posthog_post(host: str, api_key: str, batch: list[dict[str, Any]]) -> None:
    """Post one batch with posthog-python (raises on anything but 200)."""
    batch_post(api_key, host=host, gzip=True, timeout=10, batch=batch)


def posthog_message(row: StoredEvent) -> dict[str, Any]:
    """The PostHog capture message of a stored row: same uuid, time, user and properties.
    Raises ValueError when its properties do not read as a JSON object."""
    try:
        properties = _decode.decode(row.properties)
    except msgspec.DecodeError as exc:  # e.g. 1e999, which Python's JSON cannot hold
        raise ValueError(f"properties do not read: {exc}") from exc
    message: dict[str, Any] = {
        "event": row.event,
        "distinct_id": row.distinct_id,
        "properties": properties,
        "timestamp": _utc(row.timestamp).isoformat(),
        "uuid": row.event_id,
        "type": "capture",
    }
    for key in ("$set", "$set_once"):
        if isinstance(properties.get(key), dict):
            message[key] = properties[key]
    return message


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class Answer(NamedTuple):
    """What became of a post: `status` 200 sent; `final` refused for good (status, why);
    otherwise worth trying again (after `retry_after` seconds when PostHog said)."""

    status: int  # 0: no answer (the network, a timeout)
    final: bool
    reason: str
    retry_after: float | None = None

    @property
    def sent(self) -> bool:
        """Whether PostHog took the batch."""
        return self.status == 200

    @property
    def too_large(self) -> bool:
        """Whether PostHog refused the batch for its size (halves may go)."""
        return self.status == TOO_LARGE


SENT = Answer(200, final=False, reason="")


def post_batch(post: Post, host: str, api_key: str, messages: list[dict[str, Any]]) -> Answer:
    """Post `messages`; never raises: the answer says what happened."""
    try:
        post(host, api_key, messages)
    except APIError as exc:
        status = exc.status if isinstance(exc.status, int) else 0
        final = 400 <= status < 500 and status not in RETRIED_STATUSES
        reason = f"PostHog answered {status}: {exc.message}"[:500]
        return Answer(status, final, reason, exc.retry_after)
    except Exception as exc:  # requests' errors, and anything else a post can raise  # noqa: BLE001
        return Answer(0, final=False, reason=f"{type(exc).__name__}: {exc}"[:500])
    return SENT
