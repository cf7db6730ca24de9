"""Why the spool copies records into a mapped file instead of calling `write()` per event.

    uv run --frozen python -m benchmarks.spool_write [--events 200000]

Appends `--events` records of 248 bytes (the order event and its 8-byte header) to a file
in a temporary directory, two ways, each alone and then beside a second thread that
does Python work with a short system call now and then, as the SDK's sender thread does:

- `write`: one `os.write()` per record on an `O_APPEND` descriptor;
- `mmap`: a copy of the body, then of the header, into a shared mapping of a file
  allocated ahead with `posix_fallocate` (what `headwater.sdk._spool` does).

Both put the record in the kernel's page cache before returning. `os.write()` releases
the GIL for its system call and must win it back from the busy thread, which holds it
until its own next system call or the switch interval: the caller waits in a convoy.
The copy never releases the GIL. Prints microseconds per record.
"""

from __future__ import annotations

import argparse
import mmap
import os
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

BODY = b"x" * 240
HEADER = struct.pack("<II", len(BODY), zlib.crc32(BODY))


class BusyThread:
    """Python work with a system call every ~2,000 additions, until stopped."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        total = 0
        while not self._stop.is_set():
            for i in range(2000):
                total += i
            os.stat("/")

    def __enter__(self) -> BusyThread:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def by_write(directory: Path) -> Callable[[], None]:
    """One `write()` of header and body per record."""
    fd = os.open(directory / "write.seg", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    record = HEADER + BODY

    def append() -> None:
        os.write(fd, record)

    return append


def by_mmap(directory: Path, events: int) -> Callable[[], None]:
    """One copy of body then header into a mapping of a file allocated ahead."""
    size = events * (len(HEADER) + len(BODY))
    fd = os.open(directory / "mmap.seg", os.O_RDWR | os.O_CREAT, 0o600)
    os.posix_fallocate(fd, 0, size)
    mapping = mmap.mmap(fd, size)
    end = [0]

    def append() -> None:
        at = end[0]
        mapping[at + 8 : at + 8 + len(BODY)] = BODY
        mapping[at : at + 8] = HEADER
        end[0] = at + 8 + len(BODY)

    return append


def per_record(append: Callable[[], None], events: int) -> float:
    """Microseconds per call of `append`, over `events` calls."""
    start = time.perf_counter()
    for _ in range(events):
        append()
    return (time.perf_counter() - start) / events * 1e6


def main() -> None:
    """Time both ways alone and beside a busy thread; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    print("| way | alone | beside a busy thread |")
    print("|---|---:|---:|")
    for way in ("write", "mmap"):
        results = []
        for busy in (False, True):
            with tempfile.TemporaryDirectory(prefix="spool-write-") as directory:
                path = Path(directory)
                append = by_write(path) if way == "write" else by_mmap(path, args.events)
                if busy:
                    with BusyThread():
                        results.append(per_record(append, args.events))
                else:
                    results.append(per_record(append, args.events))
        print(f"| {way} | {results[0]:.2f} µs | {results[1]:.2f} µs |", flush=True)


if __name__ == "__main__":
    main()
