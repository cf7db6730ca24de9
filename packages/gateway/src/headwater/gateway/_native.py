"""The native protocol (`POST /v1/events`), whose wire types the SDK owns."""

from __future__ import annotations

from typing import Any

import msgspec

from headwater.sdk import AnyMessage, Batch

from ._errors import BadPayload, UnsupportedMediaType
from ._events import Incoming, Invalid, parse_sent_at


class _Envelope(msgspec.Struct):
    """`headwater.sdk.Batch` with its messages left encoded, to check each on its own."""

    batch: list[msgspec.Raw]
    sent_at: Any = None
    lib: str = ""


class _Ids(msgspec.Struct):
    """Just the id of a message that did not decode, to name it in the rejection."""

    event_id: Any = None


_decoders: dict[str, tuple[Any, Any, Any]] = {
    "json": (
        msgspec.json.Decoder(_Envelope),
        msgspec.json.Decoder(AnyMessage),
        msgspec.json.Decoder(_Ids),
    ),
    "msgpack": (
        msgspec.msgpack.Decoder(_Envelope),
        msgspec.msgpack.Decoder(AnyMessage),
        msgspec.msgpack.Decoder(_Ids),
    ),
}
_batches: dict[str, Any] = {
    "json": msgspec.json.Decoder(Batch),
    "msgpack": msgspec.msgpack.Decoder(Batch),
}
_to_json = msgspec.json.Encoder()
_any_msgpack = msgspec.msgpack.Decoder()


def body_format(content_type: str | None) -> str:
    """`json` or `msgpack` from a Content-Type; anything else is a 415."""
    media = (content_type or "application/json").split(";")[0].strip().lower()
    if media in ("application/json", "text/plain", ""):
        return "json"
    if media in ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack"):
        return "msgpack"
    raise UnsupportedMediaType(
        f"Content-Type {media!r} is not supported: send application/json or application/msgpack"
    )


def parse_native(body: bytes, fmt: str) -> tuple[list[Incoming | Invalid], Any, str]:
    """(events, sent_at, lib) of a native body; a body that is not a batch is a 400."""
    envelope_decoder = _decoders[fmt][0]
    try:
        envelope: _Envelope = envelope_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadPayload(f"body is not a {fmt} batch: {exc}") from exc
    except RecursionError as exc:
        raise BadPayload(f"body is not a {fmt} batch: it is nested too deeply") from exc
    try:  # the whole batch at once, in C; a message that fails it is found one by one
        typed: Batch = _batches[fmt].decode(body)
    except (msgspec.DecodeError, RecursionError):
        items = [_message(bytes(raw), fmt) for raw in envelope.batch]
    else:
        items = [
            _incoming(message, bytes(raw) if fmt == "json" else _as_json(raw))
            for message, raw in zip(typed.batch, envelope.batch, strict=True)
        ]
    return items, parse_sent_at(envelope.sent_at), envelope.lib


def _message(raw: bytes, fmt: str) -> Incoming | Invalid:
    _, message_decoder, ids_decoder = _decoders[fmt]
    text = raw if fmt == "json" else _as_json(raw)
    try:
        message: AnyMessage = message_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        reason = "event is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        return Invalid(reason=reason, raw=text, event_id=_id_of(raw, ids_decoder))
    return _incoming(message, text)


def _incoming(message: AnyMessage, text: bytes) -> Incoming:
    return Incoming(
        event=message.event,
        distinct_id=message.distinct_id,
        properties=message.properties,
        event_id=message.event_id,
        timestamp=message.timestamp,
        raw=text,
    )


def _as_json(raw: bytes | msgspec.Raw) -> bytes:
    """A MessagePack event as JSON text: what the size limit, the derived id and the
    dead-letter table see, as for a JSON body; the MessagePack bytes when it has none."""
    try:
        return _to_json.encode(_any_msgpack.decode(raw))
    except (msgspec.DecodeError, TypeError, ValueError, RecursionError):
        return bytes(raw)


def _id_of(raw: bytes, decoder: Any) -> str | None:
    try:
        found = decoder.decode(raw).event_id
    except (msgspec.DecodeError, RecursionError):
        return None
    return found if isinstance(found, str) else None
