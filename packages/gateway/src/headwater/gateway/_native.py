"""The native protocol (`POST /v1/events`), whose wire types the SDK owns."""

from __future__ import annotations

from typing import Any

import msgspec

from headwater.sdk import AnyMessage, Batch

from ._errors import BadPayload, UnsupportedMediaType
from ._events import Incoming, Invalid, RawBatch, parse_sent_at


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
    try:  # the whole batch at once, in C; a message that fails it is found one by one
        typed: Batch = _batches[fmt].decode(body)
    except (msgspec.DecodeError, RecursionError):
        envelope = _envelope(body, fmt)
        items = [_message(bytes(raw), fmt) for raw in envelope.batch]
        return items, parse_sent_at(envelope.sent_at), envelope.lib
    if fmt == "json":  # each event's text is cut out of the body only if it is needed
        source = RawBatch(body, _json_events)
        items = [
            _incoming(message, b"", source, index) for index, message in enumerate(typed.batch)
        ]
    else:  # MessagePack: what is kept of an event is its JSON
        raws = _envelope(body, fmt).batch
        items = [
            _incoming(message, _as_json(raw))
            for message, raw in zip(typed.batch, raws, strict=True)
        ]
    return items, parse_sent_at(typed.sent_at), typed.lib


def _envelope(body: bytes, fmt: str) -> _Envelope:
    try:
        envelope: _Envelope = _decoders[fmt][0].decode(body)
    except msgspec.DecodeError as exc:
        raise BadPayload(f"body is not a {fmt} batch: {exc}") from exc
    except RecursionError as exc:
        raise BadPayload(f"body is not a {fmt} batch: it is nested too deeply") from exc
    return envelope


def _json_events(body: bytes) -> list[bytes]:
    return [bytes(raw) for raw in _decoders["json"][0].decode(body).batch]


def _message(raw: bytes, fmt: str) -> Incoming | Invalid:
    _, message_decoder, ids_decoder = _decoders[fmt]
    text = raw if fmt == "json" else _as_json(raw)
    try:
        message: AnyMessage = message_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        reason = "event is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        return Invalid(reason=reason, raw=text, event_id=_id_of(raw, ids_decoder))
    return _incoming(message, text)


def _incoming(
    message: AnyMessage, text: bytes, batch: RawBatch | None = None, index: int = 0
) -> Incoming:
    return Incoming(
        event=message.event,
        distinct_id=message.distinct_id,
        properties=message.properties,
        event_id=message.event_id,
        timestamp=message.timestamp,
        raw=text,
        batch=batch,
        index=index,
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
