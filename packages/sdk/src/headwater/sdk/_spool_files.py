"""The files of a spool directory: each writer's lock file and segments, and their names.

```
<writer>.lock                 held (flock) by the process that sends the writer's segments;
                              holds that writer's progress: (segment, offset) of the first
                              record not yet known to be settled
<writer>.<number:08d>.seg     the writer's records, in order (see `_records`)
```

A writer is one opened spool: `<uuid7 hex>.<encoding>`, so that names sort by age and
say how the records are encoded. A process holds its own writer's lock for its life and
the lock of every writer it adopted. The kernel frees a lock when its process dies,
however it dies: a lock anyone can take belongs to a writer whose process is gone, and
whoever takes it sends that writer's records.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import zlib
from pathlib import Path
from typing import NamedTuple

from ._errors import ConfigError
from ._ids import new_event_id

if sys.platform != "win32":
    import fcntl

_PROGRESS = struct.Struct("<QQ")
_CHECKED = struct.Struct("<QQI")
LOCK_SUFFIX = ".lock"
SEGMENT_SUFFIX = ".seg"


class Progress(NamedTuple):
    """Where a writer's unsettled records begin: a segment number and an offset in it."""

    segment: int
    offset: int


def segment_path(directory: Path, writer: str, number: int) -> Path:
    """The file of segment `number` of `writer`."""
    return directory / f"{writer}.{number:08d}{SEGMENT_SUFFIX}"


def encoding_of(writer: str) -> str:
    """The encoding a writer's records are in (the second part of its name)."""
    return writer.rpartition(".")[2]


def list_writers(directory: Path) -> dict[str, list[int]]:
    """Every writer with a lock file or a segment in `directory`, with its segment numbers."""
    writers: dict[str, list[int]] = {}
    for name in os.listdir(directory):
        if name.startswith("."):
            continue  # a lock file being created
        if name.endswith(LOCK_SUFFIX):
            writers.setdefault(name.removesuffix(LOCK_SUFFIX), [])
        elif name.endswith(SEGMENT_SUFFIX):
            writer, _, number = name.removesuffix(SEGMENT_SUFFIX).rpartition(".")
            if number.isdigit() and writer:
                writers.setdefault(writer, []).append(int(number))
    for numbers in writers.values():
        numbers.sort()
    return writers


class WriterLock:
    """A held writer lock: the open, flock'ed lock file of one writer."""

    def __init__(self, name: str, path: Path, fd: int) -> None:
        self.name = name
        self.path = path
        self._fd = fd
        self._saved: Progress | None = None

    @classmethod
    def create(cls, directory: Path, encoding: str) -> WriterLock:
        """A new writer of `directory`, locked before its lock file bears its name."""
        if sys.platform == "win32":
            raise ConfigError("spool_dir needs POSIX file locks, which this platform lacks")
        name = f"{new_event_id().replace('-', '')}.{encoding}"
        path = directory / f"{name}{LOCK_SUFFIX}"
        fd = _locked_temporary(directory, name)
        lock = cls(name, path, fd)
        lock.save(Progress(0, 0))
        os.rename(directory / f".{name}.new", path)  # nobody could take it in between
        return lock

    @classmethod
    def adopt(cls, directory: Path, name: str) -> WriterLock | None:
        """The lock of writer `name` when no live process holds it, else None."""
        path = directory / f"{name}{LOCK_SUFFIX}"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return cls._recover(directory, name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if not _still_named(fd, path):  # its adopter removed it between open and flock
            os.close(fd)
            return None
        return cls(name, path, fd)

    @classmethod
    def _recover(cls, directory: Path, name: str) -> WriterLock | None:
        """Segments without a lock file: make one, unless another process just did."""
        try:
            fd = _locked_temporary(directory, name)
        except (FileExistsError, BlockingIOError):
            return None
        temporary = directory / f".{name}.new"
        path = directory / f"{name}{LOCK_SUFFIX}"
        try:
            os.link(temporary, path)
        except FileExistsError:
            os.close(fd)
            return None
        finally:
            temporary.unlink()
        lock = cls(name, path, fd)
        lock.save(Progress(0, 0))
        return lock

    def progress(self) -> Progress:
        """The saved progress; (0, 0) when none was saved or it is damaged."""
        data = os.pread(self._fd, _CHECKED.size, 0)
        if len(data) != _CHECKED.size:
            return Progress(0, 0)
        segment, offset, crc = _CHECKED.unpack(data)
        if zlib.crc32(data[: _PROGRESS.size]) != crc:
            return Progress(0, 0)
        return Progress(segment, offset)

    def save(self, progress: Progress) -> None:
        """Record `progress` (one `pwrite`; skipped when unchanged)."""
        if progress == self._saved:
            return
        data = _PROGRESS.pack(*progress)
        os.pwrite(self._fd, data + struct.pack("<I", zlib.crc32(data)), 0)
        self._saved = progress

    def release(self) -> None:
        """Close the lock file: the lock is free once no process has it open any more.

        In a forked child this only closes the child's copy: the parent keeps its lock.
        """
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        """Delete the lock file, then release it: the writer has nothing left to send."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.release()


def _locked_temporary(directory: Path, name: str) -> int:
    path = directory / f".{name}.new"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _still_named(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
