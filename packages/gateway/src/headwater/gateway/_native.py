"""The native protocol (`POST /v1/events`), whose wire types the SDK owns."""

from __future__ import annotations

from typing import Any

import msgspec

from headwater.sdk import AnyMessage

from ._errors import BadPayload, UnsupportedMediaType
from ._events import Incoming, Invalid, parse_sent_at


class _Envelope(msgspec.Struct):
    """`headwater.sdk.Batch` with its messages left encoded, to check each on its own."""

    batch: list[msgspec.Raw]
    sent_at: Any = None
    lib: str = ""


_decoders: dict[str, tuple[Any, Any]] = {
    "json": (msgspec.json.Decoder(_Envelope), msgspec.json.Decoder(AnyMessage)),
    "msgpack": (msgspec.msgpack.Decoder(_Envelope), msgspec.msgpack.Decoder(AnyMessage)),
}


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
    envelope_decoder, message_decoder = _decoders[fmt]
    try:
        envelope: _Envelope = envelope_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadPayload(f"body is not a {fmt} batch: {exc}") from exc
    items: list[Incoming | Invalid] = []
    for raw in envelope.batch:
        try:
            message: AnyMessage = message_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            items.append(Invalid(reason=str(exc), raw=bytes(raw)))
            continue
        items.append(
            Incoming(
                event=message.event,
                distinct_id=message.distinct_id,
                properties=message.properties,
                event_id=message.event_id,
                timestamp=message.timestamp,
                raw=bytes(raw),
            )
        )
    return items, parse_sent_at(envelope.sent_at), envelope.lib
