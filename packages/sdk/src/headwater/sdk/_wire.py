"""The native wire format (`POST /v1/events`): every body is a msgspec Struct defined here.

The SDK owns the protocol; the gateway imports these types to decode what it receives.
Message kinds are a tagged union on `type`; new fields go at the end with defaults.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import msgspec

Encoding = Literal["json", "msgpack"]

CONTENT_TYPES: dict[Encoding, str] = {
    "json": "application/json",
    "msgpack": "application/msgpack",
}


class Message(msgspec.Struct, tag_field="type", kw_only=True):
    """Fields every message kind carries; `properties` is a JSON object.

    The SDK always sends `event_id` (a UUIDv7) and `timestamp`; other senders may leave
    them out: the gateway then derives the id from the content and uses its own clock.
    """

    event: str
    distinct_id: str
    event_id: str = ""
    timestamp: datetime | None = None
    properties: dict[str, Any] = msgspec.field(default_factory=dict)


class Track(Message, tag="track"):
    """Something a user did."""


class Identify(Message, tag="identify"):
    """Traits of a user: event `$identify`, traits in `properties["$set"]`."""


class Alias(Message, tag="alias"):
    """Links two ids of one user: event `$create_alias`, the other id in `properties["alias"]`."""


AnyMessage = Track | Identify | Alias


class Batch(msgspec.Struct, kw_only=True):
    """The body of `POST /v1/events`."""

    batch: list[AnyMessage]
    sent_at: datetime | None = None
    lib: str = ""


class Rejection(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One event of a batch that the gateway refused, and why."""

    index: int
    reason: str
    event_id: str | None = None


class BatchResult(msgspec.Struct, kw_only=True):
    """The gateway's answer to a batch."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = msgspec.field(default_factory=list)


class _EncodedBatch(msgspec.Struct, kw_only=True):
    """`Batch` whose messages are already encoded: they are spliced in as they are."""

    sent_at: datetime
    lib: str
    batch: list[msgspec.Raw]


def _refuse(value: Any) -> Any:
    raise TypeError(f"objects of type {type(value).__name__} have no wire representation")


class WireCodec:
    """Encoders and decoders for one encoding, built once and reused."""

    def __init__(self, encoding: Encoding, *, compress: bool) -> None:
        self.encoding: Encoding = encoding
        self.compress = compress
        self.content_type = CONTENT_TYPES[encoding]
        if encoding == "json":
            self._encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder = msgspec.json.Encoder(
                enc_hook=_refuse
            )
            self._message_decoder: Any = msgspec.json.Decoder(AnyMessage)
        else:
            self._encoder = msgspec.msgpack.Encoder(enc_hook=_refuse)
            self._message_decoder = msgspec.msgpack.Decoder(AnyMessage)
        # One message as it will stand inside a batch (the encoder's own method: hot path).
        self.encode_message: Callable[[Message], bytes] = self._encoder.encode

    def decode_message(self, data: bytes) -> AnyMessage:
        """The inverse of `encode_message` (used when reporting failed events)."""
        result: AnyMessage = self._message_decoder.decode(data)
        return result

    def encode_batch(self, items: list[bytes], *, sent_at: datetime, lib: str) -> bytes:
        """The request body for already encoded messages, gzipped when compression is on."""
        raw = [msgspec.Raw(item) for item in items]
        body = self._encoder.encode(_EncodedBatch(sent_at=sent_at, lib=lib, batch=raw))
        return gzip.compress(body, compresslevel=6, mtime=0) if self.compress else body

    def headers(self) -> dict[str, str]:
        """Content headers of the bodies this codec makes."""
        headers = {"Content-Type": self.content_type}
        if self.compress:
            headers["Content-Encoding"] = "gzip"
        return headers


_result_decoder = msgspec.json.Decoder(BatchResult)


def decode_batch_result(body: bytes) -> BatchResult | None:
    """The gateway's per-event answer, or None when the body is not one (e.g. `{"status": 1}`)."""
    try:
        return _result_decoder.decode(body)
    except msgspec.DecodeError:
        return None
