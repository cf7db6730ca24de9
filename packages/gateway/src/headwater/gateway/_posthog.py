"""PostHog's capture API (`/e`, `/i/v0/e`, `/capture`, `/track`, `/batch`), so that
posthog-python, posthog-js and posthog-node can send to the gateway unchanged."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import msgspec

from ._body import GZIP_MAGIC, decode_json, gunzip
from ._errors import BadPayload, UnsupportedMediaType
from ._events import Incoming, Invalid, check_batch_size, now, parse_sent_at

_encode = msgspec.json.Encoder()
KEY_FIELDS = ("api_key", "token", "$token")  # where a PostHog SDK names its project key
# What PostHog's SDKs post: JSON, text (posthog-js's beacons and gzip-js), a form (`data=`)
MEDIA = ("application/json", "text/plain", "application/x-www-form-urlencoded")


class PostHogBody(msgspec.Struct, kw_only=True):
    """What a PostHog capture request carried."""

    api_key: str | None
    items: list[Incoming | Invalid]
    sent_at: Any
    lib: str


def unwrap(body: bytes, *, query: dict[str, str], content_type: str, limit: int) -> bytes:
    """The JSON text of a capture request: form or query `data=`, base64, gzip, or plain."""
    compression = query.get("compression", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = parse_qs(body.decode("latin-1"), encoding="latin-1")  # bytes as they came
        compression = form.get("compression", [compression])[0]
        body = form.get("data", [""])[0].encode("latin-1")
    if not body and query.get("data"):
        body = query["data"].encode()  # the framework read the query as UTF-8
    if compression in ("gzip", "gzip-js") or body[:2] == GZIP_MAGIC:
        return gunzip(body, limit=limit)
    if compression not in ("", "base64"):
        raise UnsupportedMediaType(f"compression {compression!r} is not supported (use gzip)")
    if body.lstrip()[:1] in (b"{", b"[", b'"'):  # JSON: base64 has none of these
        return body
    return _base64(body.strip())


def _base64(data: bytes) -> bytes:
    # Base64 never holds a space: one is a `+` that form decoding turned into a space.
    data = data.replace(b" ", b"+")
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise BadPayload(f"data is neither JSON nor base64: {exc}") from exc


def parse_posthog(text: bytes) -> PostHogBody:
    """The events of a capture body: one event, an array, or `{api_key|token, batch, sent_at}`."""
    document = decode_json(text)
    envelope: dict[str, Any] = {}
    if isinstance(document, dict) and isinstance(document.get("batch"), list):
        envelope, events = document, document["batch"]
    elif isinstance(document, dict):
        events = [document]
    elif isinstance(document, list):
        events = document
    else:
        raise BadPayload("body must be a JSON object or array of events")
    check_batch_size(len(events))
    sent_at = parse_sent_at(envelope.get("sent_at"))
    return PostHogBody(
        api_key=_api_key(envelope, events),
        items=[_incoming(event, sent_at) for event in events],
        sent_at=sent_at,
        lib=_lib(events),
    )


def _api_key(envelope: dict[str, Any], events: list[Any]) -> str | None:
    for source in (envelope, *(e for e in events if isinstance(e, dict))):
        properties = source.get("properties")
        for value in (
            *(source.get(field) for field in KEY_FIELDS),
            properties.get("token") if isinstance(properties, dict) else None,
        ):
            if isinstance(value, str) and value:
                return value
    return None


def _incoming(event: Any, sent_at: datetime | None) -> Incoming | Invalid:
    raw = _encode.encode(event)
    if not isinstance(event, dict):
        return Invalid(reason="an event must be a JSON object", raw=raw)
    properties = event.get("properties")
    properties = dict(properties) if isinstance(properties, dict) else {}
    distinct_id = _first(
        event.get("distinct_id"), event.get("$distinct_id"), properties.get("distinct_id")
    )
    for key in ("$set", "$set_once"):
        if isinstance(event.get(key), dict):
            earlier = properties.get(key)
            properties[key] = {**(earlier if isinstance(earlier, dict) else {}), **event[key]}
    for key in ("token", "distinct_id", "$token"):
        properties.pop(key, None)
    return Incoming(
        event=event.get("event"),
        distinct_id=str(distinct_id) if isinstance(distinct_id, int | float) else distinct_id,
        properties=properties,
        event_id=event.get("uuid"),
        timestamp=_timestamp(event, sent_at),
        raw=raw,
    )


def _first(*values: Any) -> Any:
    """The first value that is set: a distinct id of 0 is an id, an empty string is not."""
    return next((value for value in values if value is not None and value != ""), None)


def _timestamp(event: dict[str, Any], sent_at: datetime | None) -> Any:
    if event.get("timestamp"):
        return event["timestamp"]
    offset = event.get("offset")
    if isinstance(offset, int | float) and not isinstance(offset, bool):
        # posthog-js: milliseconds before sending. PostHog reads it as `now - offset` with
        # no clock-skew correction; the gateway adds `received_at - sent_at` to every
        # timestamp, so start from `sent_at` and the sum comes out at `received_at - offset`.
        try:
            return (sent_at or now()) - timedelta(milliseconds=offset)
        except OverflowError:  # PostHog falls back to `now` for an offset out of range
            return None
    return None


def _lib(events: list[Any]) -> str:
    for event in events:
        properties = event.get("properties") if isinstance(event, dict) else None
        if isinstance(properties, dict) and properties.get("$lib"):
            return f"{properties['$lib']}/{properties.get('$lib_version', '')}".rstrip("/")
    return "posthog"
