"""The spool's record: one encoded event behind its length and CRC-32, as written to a segment.

```
| length: u32 LE | crc32(body): u32 LE | body: `length` bytes (one encoded message) |
```

A writer appends each record with one `write()`; a process killed in the middle of it
leaves a record cut short at the end of its segment. `scan` finds where a segment's valid
records end (a length past the end of the file, a zero length or a checksum that does not
match), so that such a tail is skipped, never sent. `parse` reads records this process
has already validated (its own, or scanned ones) without checking them again.
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


def frame(body: bytes) -> bytes:
    """The record for `body`: header and body in one buffer, for a single `write()`."""
    return _pack(len(body), _crc32(body)) + body


class Parsed(NamedTuple):
    """Records read from a buffer: their offsets (in the buffer) and bodies, and where they end."""

    offsets: list[int]
    bodies: list[bytes]
    end: int


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
    offset = 0
    total = 0
    limit = len(buffer)
    unpack = HEADER.unpack_from
    while len(bodies) < max_records and offset + HEADER_BYTES <= limit:
        length, _ = unpack(buffer, offset)
        end = offset + HEADER_BYTES + length
        if end > limit or ((bodies or not oversized_first) and total + length > max_body_bytes):
            break
        offsets.append(offset)
        bodies.append(buffer[offset + HEADER_BYTES : end])
        total += length
        offset = end
    return Parsed(offsets, bodies, offset)


def record_length(fd: int, offset: int) -> int:
    """The size (header included) of the record at `offset` of an open segment."""
    header = os.pread(fd, HEADER_BYTES, offset)
    length, _ = HEADER.unpack(header)
    return HEADER_BYTES + int(length)


class Scanned(NamedTuple):
    """What `scan` found in a segment from its starting offset."""

    records: int
    end: int  # the offset just after the last valid record
    size: int  # the file's size: bytes from `end` on are a torn or damaged tail


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
    return Scanned(records, offset, size)
