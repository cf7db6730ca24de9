"""The native protocol (`POST /v1/events`), whose wire types the SDK owns."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

import msgspec

from headwater.sdk import AnyMessage, Batch

from ._body import json_problem, media_type, utf8_problem
from ._errors import BadPayload, UnsupportedMediaType
from ._events import Columns, Incoming, Invalid, RawBatch, check_batch_size, parse_sent_at


class _Envelope(msgspec.Struct):
    """`headwater.sdk.Batch` with its messages left encoded, to check each on its own."""

    batch: list[msgspec.Raw]
    sent_at: Any = None
    lib: str = ""


class _Message(msgspec.Struct, tag_field="type", kw_only=True, gc=False):
    """`headwater.sdk.Message` with its properties left as the sender's JSON text.

    The properties are most of an event; decoding them into dicts only to encode them
    again for the row cost more than the rest of the event's Python (BENCHMARKS.md). The
    row keeps the sender's object as it was sent: valid JSON (msgspec checks its syntax
    while skipping it, the body's UTF-8 is checked whole), in the sender's spelling.
    """

    event: str
    distinct_id: str
    event_id: str = ""
    timestamp: datetime | None = None
    properties: msgspec.Raw = msgspec.Raw(b"{}")
    # (Untracked by the garbage collector, as nothing it holds can refer back to it: a
    # batch's hundred of them used to set off most of its collections.)


class _Track(_Message, tag="track"):
    pass


class _Identify(_Message, tag="identify"):
    pass


class _Alias(_Message, tag="alias"):
    pass


class _Batch(msgspec.Struct, kw_only=True):
    """`headwater.sdk.Batch` of `_Message`s."""

    batch: list[_Track | _Identify | _Alias]
    sent_at: Any = None  # read by `parse_sent_at`, as when messages are read one by one
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
_json_batch = msgspec.json.Decoder(_Batch)
_json_message = msgspec.json.Decoder(_Track | _Identify | _Alias)
_msgpack_batch = msgspec.msgpack.Decoder(Batch)
_to_json = msgspec.json.Encoder()
_any_msgpack = msgspec.msgpack.Decoder()


def body_format(content_type: str | None) -> str:
    """`json` or `msgpack` from a Content-Type; anything else is a 415."""
    media = media_type(content_type)
    if media in ("application/json", "text/plain", ""):
        return "json"
    if media in ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack"):
        return "msgpack"
    raise UnsupportedMediaType(
        f"Content-Type {media!r} is not supported: send application/json or application/msgpack"
    )


Parsed = tuple[list[Incoming | Invalid] | Columns, Any, str]  # events, sent_at, lib


def parse_native(body: bytes, fmt: str) -> Parsed:
    """(events, sent_at, lib) of a native body; a body that is not a batch is a 400."""
    # The whole batch at once, in C; a body with any message that fails it is read again
    # message by message, so that each gets its own answer.
    whole = _whole_json(body) if fmt == "json" else _whole_msgpack(body)
    if whole is not None:
        return whole
    envelope = _envelope(body, fmt)
    check_batch_size(len(envelope.batch))
    items: list[Incoming | Invalid] = [_message(bytes(raw), fmt) for raw in envelope.batch]
    return items, parse_sent_at(envelope.sent_at), envelope.lib


def _whole_json(body: bytes) -> Parsed | None:
    """The batch as columns, when every message in it reads as one with an object of
    properties. Each event's text is cut out of the body only if something needs it."""
    if utf8_problem(body) is not None:  # skipped properties are not checked by the decoder
        return None
    try:
        typed: _Batch = _json_batch.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    messages = typed.batch
    check_batch_size(len(messages))
    properties = [message.properties for message in messages]
    if not _objects(properties):
        return None
    columns = Columns(
        event_ids=[message.event_id for message in messages],
        events=[message.event for message in messages],
        distinct_ids=[message.distinct_id for message in messages],
        timestamps=[message.timestamp for message in messages],
        properties=properties,
        body_size=len(body),
        items=partial(_one_by_one, messages, body),
    )
    return columns, parse_sent_at(typed.sent_at), typed.lib


def _one_by_one(
    messages: list[_Track | _Identify | _Alias], body: bytes
) -> list[Incoming | Invalid]:
    source = RawBatch(body, _json_events)
    return [_incoming(message, b"", source, index) for index, message in enumerate(messages)]


def _whole_msgpack(body: bytes) -> Parsed | None:
    """The batch, when every message in it reads as one; what is kept of an event is its
    JSON."""
    try:
        typed: Batch = _msgpack_batch.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return None
    check_batch_size(len(typed.batch))
    raws = _envelope(body, "msgpack").batch
    items: list[Incoming | Invalid] = [
        _incoming(message, _as_json(raw)) for message, raw in zip(typed.batch, raws, strict=True)
    ]
    return items, parse_sent_at(typed.sent_at), typed.lib


def _objects(values: list[msgspec.Raw]) -> bool:
    """Whether every JSON value is an object. NUL cannot occur in JSON text, so joined by
    NUL, each value but the first starts right after one: two scans in C, not a loop."""
    joined = b"\x00".join(values)
    return not values or (joined[:1] == b"{" and joined.count(b"\x00{") == len(values) - 1)


def _envelope(body: bytes, fmt: str) -> _Envelope:
    try:
        envelope: _Envelope = _decoders[fmt][0].decode(body)
    except msgspec.DecodeError as exc:
        problem = json_problem(exc, body) if fmt == "json" else str(exc)
        raise BadPayload(f"body is not a {fmt} batch: {problem}") from exc
    except RecursionError as exc:
        raise BadPayload(f"body is not a {fmt} batch: it is nested too deeply") from exc
    except UnicodeDecodeError as exc:  # in a string of the envelope (`lib`, `sent_at`)
        where = utf8_problem(body) if fmt == "json" else exc.reason
        raise BadPayload(f"body is not a {fmt} batch: it is not UTF-8: {where}") from exc
    return envelope


def _json_events(body: bytes) -> list[bytes]:
    """Each event's text, cut out of a body that decoded whole."""
    try:
        return [bytes(raw) for raw in _decoders["json"][0].decode(body).batch]
    except RecursionError as exc:  # read deeper in the stack than the first time
        raise BadPayload("body is not a json batch: it is nested too deeply") from exc


def _message(raw: bytes, fmt: str) -> Incoming | Invalid:
    _, message_decoder, ids_decoder = _decoders[fmt]
    text = raw if fmt == "json" else _as_json(raw)
    if fmt == "json":  # as in a whole batch: properties kept as sent, when they can be
        problem = utf8_problem(raw)
        if problem is not None:
            reason = f"event is not UTF-8: {problem}"
            return Invalid(reason=reason, raw=text, event_id=_id_of(raw, ids_decoder))
        try:
            kept: _Message = _json_message.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            pass  # the SDK's types name the problem
        else:
            if _objects([kept.properties]):
                return _incoming(kept, text)
    try:
        message: AnyMessage = message_decoder.decode(raw)
    except RecursionError:
        return Invalid(reason="event is nested too deeply", raw=text, event_id=None)
    except UnicodeDecodeError as exc:  # MessagePack: a string that is not UTF-8
        reason = f"event is not UTF-8: {exc.reason}"
        return Invalid(reason=reason, raw=text, event_id=_id_of(raw, ids_decoder))
    except msgspec.DecodeError as exc:
        return Invalid(reason=str(exc), raw=text, event_id=_id_of(raw, ids_decoder))
    return _incoming(message, text)


def _incoming(
    message: AnyMessage | _Message, text: bytes, batch: RawBatch | None = None, index: int = 0
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
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return None
    return found if isinstance(found, str) else None
