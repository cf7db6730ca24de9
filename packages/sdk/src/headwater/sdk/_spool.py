"""The optional durable spool: an event is in a file before the call that made it returns.

Each opened spool is a *writer* (see `_spool_files`): the caller's thread appends every
accepted event to the writer's current segment as one record (`_records`). A segment is
a file of `segment_bytes` whose blocks are allocated when it is created
(`posix_fallocate`) and which is mapped into memory (`mmap`, shared): a record is copied
into the mapping, body first, header last. The copy lands in the kernel's page cache,
where a `write()` would have put it, so it survives the process (a crash, `SIGKILL`), not
a power cut (no `fsync`). Unlike a `write()`, the copy does not release the GIL: beside a
busy thread, a `write()` per event cost 27 µs against 1.5 µs for the copy
(`python -m benchmarks.spool_write`, 2026-12-02, BENCHMARKS.md session 10). With the
blocks allocated ahead, a full disk refuses the creation of a segment (`ENOSPC`), never
a copy into one (which would be a `SIGBUS`). A full segment is cut to its records
(`ftruncate`) and a new one begun.

The sender reads the records in order from a cursor and hands them out as batches. Every
record has a *position*: its place in this process's log, the segments it holds one after
another (its own and those it adopted). A record is settled once its batch was delivered
or given up on; a segment whose records are all settled is deleted, and the writer's lock
file keeps where its first unsettled record is, so that after a restart only what was not
settled is sent again (at least once: the gateway drops a repeated event id).

A process adopts the writers of processes that are gone (their locks are free): at open,
and every `ADOPT_INTERVAL` seconds from the sender. A record cut short by the death of its
writer is found by its checksum and skipped: its call never returned.

The spool holds at most `spool_max_bytes` of unsettled records (headers included); when
an event does not fit, `on_full` decides: refuse it (`drop_newest`), wait for room up to
`block_timeout` (`block`), or evict the oldest records not yet being sent (`drop_oldest`).
A disk that refuses a new segment (full, a quota) refuses the event that needed it.
Records of a writer with the other encoding are re-encoded as they are read.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import mmap
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._errors import ConfigError, SpoolFull
from ._options import ClientOptions
from ._records import HEADER_BYTES, header, parse, record_length, scan
from ._spool_files import (
    Progress,
    WriterLock,
    encoding_of,
    list_writers,
    segment_path,
)
from ._stats import Counters
from ._wire import Encoding, WireCodec

logger = logging.getLogger("headwater.sdk")

ADOPT_INTERVAL = 5.0  # seconds between two looks for writers whose process is gone
LEGACY_FILE = "headwater-spool.sqlite3"  # the SQLite spool of SDKs before segment files
READ_CHUNK = 256 * 1024  # bytes the sender reads at a time (a batch of 500 is ~120 KB)
_MIN_SEGMENT = 64 * 1024
_MAX_SEGMENT = 4 * 1024 * 1024


def segment_bytes(max_bytes: int) -> int:
    """The size of a segment: a sixteenth of the bound, within [64 KiB, 4 MiB]."""
    return min(max(max_bytes // 16, _MIN_SEGMENT), _MAX_SEGMENT)


@dataclass(eq=False)
class Segment:
    """One segment file this process holds, and where its records sit in the log."""

    writer: str
    number: int
    path: Path
    base: int  # the log position of offset 0
    start: int  # the first offset this process sends from
    end: int  # the offset just after the last whole record
    foreign: bool  # written in the other encoding
    sealed: bool = False
    write_fd: int = -1
    read_fd: int = -1
    mapping: mmap.mmap | None = None  # the writer's view of its segment

    @property
    def first(self) -> int:
        """The position of the first record to send."""
        return self.base + self.start

    @property
    def last(self) -> int:
        """The position just after the last record."""
        return self.base + self.end

    def close(self) -> None:
        """Unmap it and close both descriptors (the file stays as it is)."""
        if self.mapping is not None:
            self.mapping.close()
            self.mapping = None
        for fd in (self.write_fd, self.read_fd):
            if fd >= 0:
                os.close(fd)
        self.write_fd = self.read_fd = -1


class Spool:
    """A bounded, durable FIFO of encoded events, written by the callers, read by one sender.

    `append` may be called from any thread; `take`, `ack`, `release` and `adopt_orphans`
    by one sender at a time.
    """

    def __init__(self, options: ClientOptions, *, counters: Counters) -> None:
        if options.spool_dir is None:
            raise ConfigError("a spool needs spool_dir")
        self.directory = options.spool_dir
        self._encoding: Encoding = options.encoding
        self._max_bytes = options.spool_max_bytes
        self._max_attempts = options.spool_max_attempts
        self._batch_events = options.max_batch_events
        self._batch_bytes = options.max_batch_bytes
        self._policy = options.on_full
        self._block_timeout = options.block_timeout
        self._segment_bytes = segment_bytes(options.spool_max_bytes)
        self._counters = counters
        self._codec = WireCodec(options.encoding, compress=False)
        self._other = WireCodec("msgpack" if options.encoding == "json" else "json", compress=False)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._segments: deque[Segment] = deque()  # in log order
        self._active: Segment | None = None  # the own segment being appended to
        self._reading: Segment | None = None  # being read outside the lock: not deleted
        self._next_number = 1
        self._log_end = 0  # the position after the last record
        self._cursor = 0  # the position of the first record not yet read
        self._unread = 0
        self._waiting = 0  # records not settled: unread, being sent, or waiting for a retry
        self._waiting_bytes = 0
        self._outstanding: dict[int, int] = {}  # position -> record size, read but not settled
        self._retry: deque[tuple[list[int], list[bytes]]] = deque()
        self._attempts: dict[int, int] = {}
        self._adopted_at = -ADOPT_INTERVAL
        self._closed_count: int | None = None
        self.appended = 0  # events this process wrote
        self.on_batch_ready: Callable[[], None] = _nothing
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._own = WriterLock.create(self.directory, options.encoding)
        except OSError as exc:
            raise ConfigError(f"spool_dir {str(self.directory)!r} cannot be used: {exc}") from exc
        self._writers: dict[str, WriterLock] = {self._own.name: self._own}
        if (self.directory / LEGACY_FILE).exists():
            logger.warning(
                "spool: %s was left by an earlier version of the SDK, which kept its spool in"
                " SQLite; its events are not read or sent by this version",
                self.directory / LEGACY_FILE,
            )
        self.adopt_orphans(force=True)

    # -- the caller's side -----------------------------------------------------

    def append(self, body: bytes) -> None:
        """Write one encoded event to its segment before returning; `SpoolFull` when it cannot."""
        head = header(body)
        size = HEADER_BYTES + len(body)
        with self._lock:
            if self._closed_count is not None:
                raise SpoolFull("the spool is closed")
            try:
                if self._waiting_bytes + size > self._max_bytes:
                    self._make_room(size)
                self._write(head, body)
            except OSError as exc:  # creating a segment (a full disk), reading one to evict
                raise SpoolFull(f"cannot write to the spool: {exc}") from exc
            self._waiting += 1
            self._waiting_bytes += size
            self._unread += 1
            self.appended += 1
            ready = (
                self._unread >= self._batch_events
                or self._log_end - self._cursor >= self._batch_bytes
            )
        if ready:
            self.on_batch_ready()

    def _write(self, head: bytes, body: bytes) -> None:
        segment = self._active
        end = segment.end if segment is not None else 0
        size = HEADER_BYTES + len(body)
        if segment is None or segment.mapping is None or end + size > len(segment.mapping):
            segment = self._open_segment(size)
            end = 0
        mapping = segment.mapping
        assert mapping is not None  # an open segment is mapped
        mapping[end + HEADER_BYTES : end + size] = body
        mapping[end : end + HEADER_BYTES] = head  # last: a zero header ends the records
        segment.end = end + size
        self._log_end += size

    def _open_segment(self, size: int) -> Segment:
        """Seal the current segment; create, allocate and map the next one."""
        if self._active is not None:
            self._seal(self._active)
        number = self._next_number
        path = segment_path(self.directory, self._own.name, number)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        capacity = max(self._segment_bytes, size)
        try:
            os.posix_fallocate(fd, 0, capacity)  # a full disk says so here, not in a copy
            mapping = mmap.mmap(fd, capacity)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._next_number += 1
        segment = Segment(self._own.name, number, path, self._log_end, 0, 0, foreign=False)
        segment.write_fd, segment.mapping = fd, mapping
        self._segments.append(segment)
        self._active = segment
        return segment

    def _seal(self, segment: Segment) -> None:
        """Write no more to `segment`: unmap it and give back its unused space."""
        if segment.mapping is not None:
            segment.mapping.close()
            segment.mapping = None
        if segment.write_fd >= 0:
            try:
                os.ftruncate(segment.write_fd, segment.end)
            finally:
                os.close(segment.write_fd)
                segment.write_fd = -1
        segment.sealed = True
        if self._active is segment:
            self._active = None

    def _make_room(self, size: int) -> None:
        """Apply `on_full` for a record of `size` bytes; `SpoolFull` when it still does not fit."""
        if self._policy == "block":
            deadline = time.monotonic() + self._block_timeout
            while self._waiting_bytes + size > self._max_bytes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._room.wait(remaining)
        elif self._policy == "drop_oldest":
            self._evict(size)
        if self._waiting_bytes + size > self._max_bytes:
            raise SpoolFull(
                f"spool full: {self._waiting_bytes} bytes waiting, "
                f"spool_max_bytes={self._max_bytes} (on_full={self._policy!r})"
            )

    def _evict(self, size: int) -> None:
        """Skip the oldest unread records until `size` more bytes fit, counting each as lost."""
        evicted = 0
        while self._waiting_bytes + size > self._max_bytes and self._cursor < self._log_end:
            segment = self._segment_at(self._cursor)
            length = record_length(self._read_fd(segment), self._cursor - segment.base)
            self._cursor += length
            self._unread -= 1
            self._waiting -= 1
            self._waiting_bytes -= length
            evicted += 1
        if evicted:
            detail = (
                "evicted for newer events"
                f" (on_full='drop_oldest', spool_max_bytes={self._max_bytes})"
            )
            self._counters.give_up("spool_full", evicted, detail)
            self._collect()

    # -- the sender's side -----------------------------------------------------

    def take(self, max_events: int, max_bytes: int) -> tuple[list[int], list[bytes]]:
        """The next batch, (positions, encoded events): unread records first, then retries."""
        positions: list[int] = []
        items: list[bytes] = []
        size = 0
        while len(items) < max_events:
            found = self._read(max_events - len(items), max_bytes - size, first=not items)
            if found is None or not found[1]:
                break
            positions += found[0]
            items += found[1]
            size += found[2]
        if items:
            return positions, items
        with self._lock:
            if self._retry and self._closed_count is None:
                return self._retry.popleft()
            return [], []

    def _read(
        self, max_events: int, max_bytes: int, *, first: bool
    ) -> tuple[list[int], list[bytes], int] | None:
        """Records from the cursor within one segment, and their bytes; None when all was read."""
        with self._lock:
            start = self._cursor
            if start >= self._log_end or self._closed_count is not None:
                return None
            segment = self._segment_at(start)
            offset = start - segment.base
            fd = self._read_fd(segment)
            available = segment.end - offset
            self._reading = segment
        try:
            wanted = min(available, max(max_bytes, 0) + HEADER_BYTES * max_events, READ_CHUNK)
            parsed = parse(
                os.pread(fd, wanted, offset),
                max_records=max_events,
                max_body_bytes=max_bytes,
                oversized_first=first,
            )
            if not parsed.offsets and first:  # one record larger than the batch's byte limit
                whole = os.pread(fd, record_length(fd, offset), offset)
                parsed = parse(whole, max_records=1, max_body_bytes=len(whole))
        finally:
            with self._lock:
                self._reading = None
        positions, bodies = self._commit_read(start, parsed.offsets, parsed.bodies, parsed.end)
        if segment.foreign:
            bodies = [self._codec.encode_message(self._other.decode_message(b)) for b in bodies]
        return positions, bodies, parsed.body_bytes

    def _commit_read(
        self, start: int, offsets: list[int], bodies: list[bytes], end: int
    ) -> tuple[list[int], list[bytes]]:
        """Move the cursor past what was read, less what `drop_oldest` evicted meanwhile."""
        with self._lock:
            positions = [start + offset for offset in offsets]
            kept = bisect.bisect_left(positions, self._cursor)
            positions, bodies = positions[kept:], bodies[kept:]
            self._cursor = max(self._cursor, start + end)
            self._unread -= len(bodies)
            ends = [*positions[1:], start + end]  # records lie back to back
            sizes = [b - a for a, b in zip(positions, ends, strict=True)]
            self._outstanding.update(zip(positions, sizes, strict=True))
        return positions, bodies

    def ack(self, positions: list[int]) -> None:
        """These records were delivered or given up on: they leave the spool."""
        with self._lock:
            if self._closed_count is not None:
                return  # a sender that outlived shutdown: the next process sends them again
            self._settle(positions)
            self._collect()

    def release(self, positions: list[int], items: list[bytes], *, count_attempt: bool) -> set[int]:
        """Give a batch back for a later retry; returns the positions out of attempts (gone)."""
        with self._lock:
            spent: set[int] = set()
            if self._closed_count is not None:
                return spent
            for position in positions if count_attempt else ():
                attempts = self._attempts.get(position, 0) + 1
                self._attempts[position] = attempts
                if attempts >= self._max_attempts:
                    spent.add(position)
            kept = [(p, item) for p, item in zip(positions, items, strict=True) if p not in spent]
            if kept:
                self._retry.append(([p for p, _ in kept], [item for _, item in kept]))
            if spent:
                self._settle(spent)
                self._collect()
        return spent

    def _settle(self, positions: list[int] | set[int]) -> None:
        outstanding = self._outstanding
        settled = freed = 0
        for position in positions:
            size = outstanding.pop(position, 0)
            if size:
                settled += 1
                freed += size
        if self._attempts:
            for position in positions:
                self._attempts.pop(position, None)
        self._waiting -= settled
        self._waiting_bytes -= freed
        self._room.notify_all()

    def end_position(self) -> int:
        """The position after the newest record (what a flush waits for)."""
        return self._log_end

    def settled_before(self, position: int) -> bool:
        """Whether every record before `position` was delivered or given up on."""
        with self._lock:
            lowest = min(self._outstanding, default=self._cursor)
            return min(lowest, self._cursor) >= position

    def __len__(self) -> int:
        """Events waiting: not yet delivered nor given up on."""
        if self._closed_count is not None:
            return self._closed_count
        return self._waiting

    # -- deleting what is settled ----------------------------------------------

    def _collect(self) -> None:
        """Delete settled segments; save each writer's progress; drop adopted writers done.

        A file error here only delays the clean-up (or, for a progress not saved, makes a
        restart send some settled events again): it is logged, never raised to a caller.
        """
        pending = sorted(self._outstanding)
        try:
            for segment in list(self._segments):
                if segment.sealed and segment is not self._reading and self._done(segment, pending):
                    self._segments.remove(segment)
                    segment.close()
                    segment.path.unlink(missing_ok=True)
            for name, lock in list(self._writers.items()):
                progress = self._progress(name, pending)
                if progress is not None:
                    lock.save(progress)
                elif name != self._own.name:
                    lock.remove()
                    del self._writers[name]
        except OSError as exc:
            logger.warning("spool: cleaning up %s failed: %s", self.directory, exc)

    def _done(self, segment: Segment, pending: list[int]) -> bool:
        if segment.last > self._cursor:
            return False
        at = bisect.bisect_left(pending, segment.first)
        return at == len(pending) or pending[at] >= segment.last

    def _progress(self, writer: str, pending: list[int]) -> Progress | None:
        """Where `writer`'s first unsettled record is; None when it has no segment left."""
        mine = [s for s in self._segments if s.writer == writer]
        for segment in mine:
            at = bisect.bisect_left(pending, segment.first)
            candidates = [pending[at]] if at < len(pending) and pending[at] < segment.last else []
            if self._cursor < segment.last:
                candidates.append(max(self._cursor, segment.first))
            if candidates:
                return Progress(segment.number, min(candidates) - segment.base)
        if mine:
            return Progress(mine[-1].number, mine[-1].end)
        if writer == self._own.name:
            return Progress(self._next_number, 0)
        return None

    def _segment_at(self, position: int) -> Segment:
        for segment in self._segments:
            if segment.first <= position < segment.last:
                return segment
        raise LookupError(f"no segment holds position {position}")  # a bug, not a state

    def _read_fd(self, segment: Segment) -> int:
        if segment.read_fd < 0:
            segment.read_fd = os.open(segment.path, os.O_RDONLY)
        return segment.read_fd

    # -- adopting what dead processes left -------------------------------------

    def adopt_orphans(self, *, force: bool = False) -> None:
        """Take over the writers whose process is gone, while there is room for them."""
        now = time.monotonic()
        if self._closed_count is not None or (
            not force and now - self._adopted_at < ADOPT_INTERVAL
        ):
            return
        self._adopted_at = now
        try:
            writers = sorted(list_writers(self.directory).items())
        except OSError as exc:
            logger.warning("spool: cannot list %s: %s", self.directory, exc)
            return
        for writer, numbers in writers:
            if writer in self._writers or not self._has_room_for(writer, numbers):
                continue
            try:
                lock = WriterLock.adopt(self.directory, writer)
                if lock is not None:
                    self._take_over(lock)
            except OSError as exc:  # left for a later look, by this process or another
                logger.warning("spool: cannot take over writer %s: %s", writer, exc)

    def _has_room_for(self, writer: str, numbers: list[int]) -> bool:
        """Whether `writer`'s files fit beside what this process holds (by their size on disk:
        a dead writer's last segment counts whole, padding included)."""
        if not self._waiting_bytes:
            return True  # a backlog larger than the bound is still sent, alone
        size = 0
        for number in numbers:
            with contextlib.suppress(FileNotFoundError):
                size += segment_path(self.directory, writer, number).stat().st_size
        return self._waiting_bytes + size <= self._max_bytes

    def _take_over(self, lock: WriterLock) -> None:
        """Register the segments of a writer whose lock this process just took."""
        found: list[tuple[Segment, int]] = []
        try:
            self._scan_writer(lock, found)
        except OSError:
            for segment, _ in found:
                segment.close()
            lock.release()
            raise
        with self._lock:
            if self._active is not None:
                self._seal(self._active)  # the adopted records go after this process's own
            for segment, records in found:
                self._add_adopted(segment, records)
            self._writers[lock.name] = lock
            self._collect()

    def _scan_writer(self, lock: WriterLock, found: list[tuple[Segment, int]]) -> None:
        """Open and check each segment of `lock`'s writer from its progress on, into `found`."""
        progress = lock.progress()
        foreign = encoding_of(lock.name) != self._encoding
        for number in list_writers(self.directory).get(lock.name, []):
            path = segment_path(self.directory, lock.name, number)
            if number < progress.segment:
                path.unlink(missing_ok=True)  # settled, only not yet deleted
                continue
            start = progress.offset if number == progress.segment else 0
            opened = _open_adopted(lock.name, number, path, start, foreign)
            if opened is not None:
                found.append(opened)

    def _add_adopted(self, segment: Segment, records: int) -> None:
        segment.base = self._log_end - segment.start
        size = segment.end - segment.start
        self._log_end += size
        self._waiting += records
        self._waiting_bytes += size
        self._unread += records
        self._segments.append(segment)

    # -- the end ---------------------------------------------------------------

    def close(self) -> None:
        """Delete what is settled, save where the rest begins, and release every lock."""
        with self._lock:
            if self._closed_count is not None:
                return
            if self._active is not None:
                try:
                    self._seal(self._active)
                except OSError as exc:  # the segment keeps its zero padding: still readable
                    logger.warning("spool: closing %s failed: %s", self._active.path, exc)
                    self._active.sealed = True
            self._collect()
            for segment in self._segments:
                segment.close()
            own = self._writers.pop(self._own.name)
            if any(s.writer == own.name for s in self._segments):
                own.release()
            else:
                own.remove()
            for lock in self._writers.values():
                lock.release()
            self._closed_count = self._waiting

    def forget(self) -> None:
        """In a forked child: close the inherited descriptors, leaving files and locks alone.

        The parent still has the same open lock files, so its locks hold.
        """
        for segment in self._segments:
            segment.close()
        for lock in self._writers.values():
            lock.release()
        self._closed_count = 0


def _open_adopted(
    writer: str, number: int, path: Path, start: int, foreign: bool
) -> tuple[Segment, int] | None:
    """An adopted segment read from `start`, with its count of whole records; None when gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        found = scan(fd, start)
    except OSError:
        os.close(fd)
        raise
    if found.damaged:
        logger.warning(
            "spool: skipped %d bytes at the end of %s, a record cut short when its process"
            " died (its call never returned)",
            found.damaged,
            path.name,
        )
    segment = Segment(writer, number, path, 0, start, found.end, foreign, sealed=True, read_fd=fd)
    return segment, found.records


def _nothing() -> None:
    return None
