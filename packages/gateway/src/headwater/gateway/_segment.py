"""Segment's tracking API (`/v1/batch`, `/v1/track`, `/v1/identify`, `/v1/page`,
`/v1/screen`, `/v1/alias`, `/v1/group`, and the short names analytics.js posts to:
`/v1/b`, `/v1/t`, `/v1/i`, `/v1/p`, `/v1/s`, `/v1/a`, `/v1/g`), so that analytics-python,
rudder-sdk-python and analytics.js send to the gateway unchanged."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from ._body import decode_json
from ._errors import BadPayload
from ._events import Incoming, Invalid, check_batch_size, id_from, parse_sent_at

_encode = msgspec.json.Encoder()

KINDS = ("track", "identify", "page", "screen", "alias", "group")
ENVELOPE_KEYS = ("writeKey", "sentAt")  # of the request, not of its message
MEDIA = ("application/json", "text/plain")  # analytics.js posts text: no CORS preflight


class SegmentBody(msgspec.Struct, kw_only=True):
    """What a Segment tracking request carried."""

    write_key: str | None
    items: list[Incoming | Invalid]
    sent_at: Any
    lib: str


def basic_auth_user(header: str | None) -> str | None:
    """The user name of an HTTP Basic `Authorization` header (Segment's write key)."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def parse_segment(text: bytes, *, kind: str | None) -> SegmentBody:
    """Events of a body: `{batch: [...]}` for `/v1/batch`, one message for the others."""
    document = decode_json(text)
    if not isinstance(document, dict):
        raise BadPayload("body must be a JSON object")
    if kind is None:
        messages = document.get("batch")
        if not isinstance(messages, list):
            raise BadPayload("a /v1/batch body needs a `batch` array")
        check_batch_size(len(messages))
    else:
        message = {k: v for k, v in document.items() if k not in ENVELOPE_KEYS}
        messages = [{**message, "type": kind}]
    context = document.get("context")
    shared: dict[str, Any] = context if isinstance(context, dict) else {}
    return SegmentBody(
        write_key=document.get("writeKey") if isinstance(document.get("writeKey"), str) else None,
        items=[_incoming(m, shared) for m in messages],
        sent_at=parse_sent_at(document.get("sentAt")),
        lib=_lib(messages, shared),
    )


def _incoming(message: Any, shared: dict[str, Any]) -> Incoming | Invalid:
    raw = _encode.encode(message)
    if not isinstance(message, dict):
        return Invalid(reason="a message must be a JSON object", raw=raw)
    kind = message.get("type")
    if kind not in KINDS:
        return Invalid(reason=f"type must be one of {', '.join(KINDS)}, got {kind!r}", raw=raw)
    name, properties = _name_and_properties(kind, message)
    own = message.get("context")
    context = {**shared, **(own if isinstance(own, dict) else {})}
    if context:
        properties["$context"] = context
    distinct_id = message.get("userId") or message.get("anonymousId")
    return Incoming(
        event=name,
        distinct_id=str(distinct_id) if isinstance(distinct_id, int | float) else distinct_id,
        properties=properties,
        event_id=_message_id(message.get("messageId")),
        timestamp=message.get("timestamp") or message.get("originalTimestamp"),
        raw=raw,
    )


def _message_id(value: Any) -> Any:
    """analytics.js ids look like `ajs-next-<hash>`: map them to a stable UUID."""
    return id_from(value) if isinstance(value, str) and value else value


def _name_and_properties(kind: str, message: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    properties = message.get("properties")
    properties = dict(properties) if isinstance(properties, dict) else {}
    traits = _object(message.get("traits"))
    if kind == "track":
        return message.get("event"), properties
    if kind == "identify":
        # rudder-sdk-python sends an identify's traits in `context.traits`.
        context = message.get("context")
        carried = context.get("traits") if isinstance(context, dict) else None
        return "$identify", {**properties, "$set": {**_object(carried), **traits}}
    if kind in ("page", "screen"):
        for key in ("name", "category"):
            if message.get(key):
                properties[key] = message[key]
        return ("$pageview" if kind == "page" else "$screen"), properties
    if kind == "alias":
        return "$create_alias", {**properties, "alias": message.get("previousId")}
    return "$groupidentify", {  # group
        **properties,
        "$group_key": message.get("groupId"),
        "$group_set": traits,
    }


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _lib(messages: list[Any], shared: dict[str, Any]) -> str:
    for message in [{"context": shared}, *messages]:
        context = message.get("context") if isinstance(message, dict) else None
        library = context.get("library") if isinstance(context, dict) else None
        if isinstance(library, dict) and library.get("name"):
            return f"{library['name']}/{library.get('version', '')}".rstrip("/")
    return "segment"
