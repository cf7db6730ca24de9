"""The spool's record: one encoded event behind its length and CRC-32, as written to a segment.

```
| length: u32 LE | crc32(body): u32 LE | body: `length` bytes (one encoded message) |
```

Segments are allocated ahead and filled with zeros: a zero length ends the records. A
writer copies the body first and the header last, so that a process killed in between
leaves zeros where the header goes, or, killed in the header, a checksum that fails.
`scan` finds where a segment's valid records end (a zero length, a length past the end of
the file, a checksum that does not match), so that such a tail is skipped, never sent,
and tells zero padding from damage. `parse` reads records this process has already
validated (its own, or scanned ones) without checking them again.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import NamedTuple

HEADER = struct.Struct("<II")
HEADER_BYTES = HEADER.size
_SCAN_CHUNK = 1 << 20  # bytes read at a time when validating a segment

_pack = HEADER.pack
_crc32 = zlib.crc32


def header(body: bytes) -> bytes:
    """The header of the record of `body`."""
    return _pack(len(body), _crc32(body))


class Parsed(NamedTuple):
    """Records read from a buffer: their offsets (in the buffer) and bodies, and where they end."""

    offsets: list[int]
    bodies: list[bytes]
    end: int
    body_bytes: int


def parse(
    buffer: bytes, *, max_records: int, max_body_bytes: int, oversized_first: bool = True
) -> Parsed:
    """Whole records from the start of `buffer`, within the limits.

    With `oversized_first`, the first record is taken even when its body alone is over
    `max_body_bytes` (a batch holds at least one event). A record cut by the end of
    `buffer` is left for the next read.
    """
    offsets: list[int] = []
    bodies: list[bytes] = []
    add_offset, add_body, unpack = offsets.append, bodies.append, HEADER.unpack_from
    offset = total = count = 0
    limit = len(buffer)
    while count < max_records and offset + HEADER_BYTES <= limit:
        length, _ = unpack(buffer, offset)
        start = offset + HEADER_BYTES
        end = start + length
        if end > limit or ((count or not oversized_first) and total + length > max_body_bytes):
            break
        add_offset(offset)
        add_body(buffer[start:end])
        total += length
        count += 1
        offset = end
    return Parsed(offsets, bodies, offset, total)


def record_length(fd: int, offset: int) -> int:
    """The size (header included) of the record at `offset` of an open segment."""
    header = os.pread(fd, HEADER_BYTES, offset)
    length, _ = HEADER.unpack(header)
    return HEADER_BYTES + int(length)


class Scanned(NamedTuple):
    """What `scan` found in a segment from its starting offset."""

    records: int
    end: int  # the offset just after the last valid record
    damaged: int  # bytes after `end` up to the last one that is not zero padding


def scan(fd: int, start: int) -> Scanned:
    """Count the valid records of a segment from `start`, checking every length and checksum."""
    size = os.fstat(fd).st_size
    records = 0
    offset = start
    buffer = b""
    buffer_at = start  # the file offset of buffer[0]
    while offset + HEADER_BYTES <= size:
        at = offset - buffer_at
        if at + HEADER_BYTES > len(buffer):
            buffer, buffer_at, at = os.pread(fd, _SCAN_CHUNK, offset), offset, 0
        length, crc = HEADER.unpack_from(buffer, at)
        end = offset + HEADER_BYTES + length
        if length == 0 or end > size:
            break
        if at + HEADER_BYTES + length > len(buffer):
            wanted = max(_SCAN_CHUNK, HEADER_BYTES + length)
            buffer, buffer_at, at = os.pread(fd, wanted, offset), offset, 0
            if len(buffer) < HEADER_BYTES + length:
                break
        body = memoryview(buffer)[at + HEADER_BYTES : at + HEADER_BYTES + length]
        if _crc32(body) != crc:
            break
        records += 1
        offset = end
    return Scanned(records, offset, _damaged(fd, offset, size))


def _damaged(fd: int, start: int, size: int) -> int:
    """Bytes from `start` to the last byte that is not zero: a torn or garbled record."""
    last = start  # just after the last byte that is not zero
    offset = start
    while offset < size:
        chunk = os.pread(fd, min(_SCAN_CHUNK, size - offset), offset)
        if not chunk:
            break
        kept = len(chunk.rstrip(b"\0"))
        if kept:
            last = offset + kept
        offset += len(chunk)
    return last - start
