"""Reading a request body within limits: size, time, decompression, and its JSON."""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from ._errors import BadPayload, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

GZIP_MAGIC = b"\x1f\x8b"
_json = msgspec.json.Decoder()
# A `\uD800`-`\uDBFF` escape (not itself escaped: an even run of backslashes before it)
# that no low surrogate escape follows.
_LONE_HIGH_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, without parameters ("" for none)."""
    return (content_type or "").split(";")[0].strip().lower()


def require_media(content_type: str | None, allowed: tuple[str, ...]) -> None:
    """A Content-Type whose media type is not in `allowed` is a 415 (none is accepted)."""
    media = media_type(content_type)
    if media and media not in allowed:
        choices = ", ".join(allowed[:-1]) + " or " + allowed[-1]
        raise UnsupportedMediaType(f"Content-Type {media!r} is not supported: send {choices}")


async def read_body(
    chunks: AsyncIterator[bytes], *, limit: int, timeout: float, declared: str | None = None
) -> bytes:
    """The whole body, refusing more than `limit` bytes or more than `timeout` seconds.

    A body whose `Content-Length` (`declared`) is over the limit is refused before a byte
    of it is read: neither waited for (a length that lies) nor held.
    """
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):  # a timer, not a task: cheap for small bodies
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
                parts.append(chunk)
    except TimeoutError as exc:
        raise RequestTimeout(f"the body did not arrive within {timeout:g}s") from exc
    return parts[0] if len(parts) == 1 else b"".join(parts)


def gunzip(data: bytes, *, limit: int) -> bytes:
    """Decompress gzip without ever holding more than `limit` bytes (a gzip bomb is a 413).

    Every member of a multi-member body is read; a truncated body is a 400, not a prefix.
    """
    out = bytearray()
    rest = data
    while True:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))  # never 0: unbounded
        except zlib.error as exc:
            raise BadPayload(f"body is not valid gzip: {exc}") from exc
        if len(out) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"body decompresses to more than the limit of {limit} bytes")
        if not inflater.eof:
            raise BadPayload("body is not valid gzip: it ends before its gzip stream does")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)


def decode_content(data: bytes, encoding: str | None, *, limit: int) -> bytes:
    """Undo `Content-Encoding` (gzip or identity); other encodings are a 415."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return gunzip(data, limit=limit)
    if encoding == "identity":
        return data
    raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported (use gzip)")


def utf8_problem(text: bytes) -> str | None:
    """Where `text` stops being UTF-8 (`invalid start byte at byte 12`), or None.

    msgspec checks UTF-8 only in the strings it makes, and says so with a
    `UnicodeDecodeError` about the string, not the body: callers name the place with this.
    """
    if text.isascii():
        return None
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"{exc.reason} at byte {exc.start}"
    return None


def json_problem(exc: msgspec.DecodeError, text: bytes) -> str:
    """What msgspec says is wrong with the JSON `text`, but a lone high surrogate escape
    (`"\\ud800"`), which it reports as truncated input, named as what it is: where the escape
    ends, as msgspec names a lone low one."""
    if str(exc) == "Input data was truncated" and (lone := _LONE_HIGH_SURROGATE.search(text)):
        return f"JSON is malformed: invalid utf-16 surrogate pair (byte {lone.end()})"
    return str(exc)


def decode_json(text: bytes) -> Any:
    """The JSON document of a body; a 400 naming what is wrong with it."""
    try:
        return _json.decode(text)
    except msgspec.DecodeError as exc:
        raise BadPayload(f"body is not JSON: {json_problem(exc, text)}") from exc
    except RecursionError as exc:  # msgspec: too deep is RecursionError
        raise BadPayload(f"body is not JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise BadPayload(f"body is not UTF-8: {utf8_problem(text)}") from exc
