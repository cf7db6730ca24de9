"""The optional durable spool: encoded events in SQLite (WAL) until the gateway has them.

Rows are leased to the process sending them, so several processes (or a forked child)
can share one spool without sending a row twice at once; the leases of a process that
died are freed when the spool is opened again. WAL with `synchronous=NORMAL` keeps
every committed row across a process crash (not across a power cut of the machine).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ._stats import Counters

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL,
    size INTEGER NOT NULL,
    encoding TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    lease_pid INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_by_attempts ON events (attempts, id);
"""


class Spool:
    """A bounded, durable FIFO of encoded events shared by the processes that open it."""

    def __init__(
        self,
        directory: Path,
        *,
        encoding: str,
        max_bytes: int,
        max_attempts: int,
        counters: Counters,
        lease_seconds: float,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "headwater-spool.sqlite3"
        self._encoding = encoding
        self._max_bytes = max_bytes
        self._max_attempts = max_attempts
        self._counters = counters
        self._lease_seconds = lease_seconds
        self._lock = threading.Lock()
        self._closed_count: int | None = None  # what was left when closed
        self._db = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._free_dead_leases()

    def _free_dead_leases(self) -> None:
        pids = [pid for (pid,) in self._db.execute("SELECT DISTINCT lease_pid FROM events")]
        dead = [pid for pid in pids if pid and not _alive(pid)]
        for pid in dead:
            self._db.execute("UPDATE events SET lease_until = 0 WHERE lease_pid = ?", (pid,))

    def convert(self, other_encoding: str, recode: Callable[[bytes], bytes]) -> None:
        """Re-encode rows written by a client with another encoding."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, body FROM events WHERE encoding = ?", (other_encoding,)
            ).fetchall()
            for row_id, body in rows:
                new = recode(body)
                self._db.execute(
                    "UPDATE events SET body = ?, size = ?, encoding = ? WHERE id = ?",
                    (new, len(new), self._encoding, row_id),
                )

    def put_many(self, items: list[bytes]) -> None:
        """Store events durably (one transaction), evicting the oldest beyond the size bound."""
        if not items:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO events (body, size, encoding) VALUES (?, ?, ?)",
                [(item, len(item), self._encoding) for item in items],
            )
            evicted = self._evict_over_bound()
            self._db.execute("COMMIT")
        if evicted:
            self._counters.drop("spool_full", evicted)

    def _evict_over_bound(self) -> int:
        """Delete the oldest rows not being sent until the spool fits; returns how many."""
        (total,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM events").fetchone()
        excess = total - self._max_bytes
        if excess <= 0:
            return 0
        now = time.time()
        row = self._db.execute(
            "SELECT id FROM (SELECT id, SUM(size) OVER (ORDER BY id) AS freed"
            "                FROM events WHERE lease_until < ?)"
            " WHERE freed >= ? ORDER BY id LIMIT 1",
            (now, excess),
        ).fetchone()
        last_id = row[0] if row is not None else _MAX_ROW_ID
        cursor = self._db.execute(
            "DELETE FROM events WHERE id <= ? AND lease_until < ?", (last_id, now)
        )
        return cursor.rowcount

    def take(self, max_events: int, max_bytes: int) -> tuple[list[int], list[bytes]]:
        """Lease the next batch: (row ids, bodies); empty when nothing is free to send."""
        now = time.time()
        ids: list[int] = []
        bodies: list[bytes] = []
        size = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                "SELECT id, body FROM events WHERE lease_until < ? ORDER BY attempts, id LIMIT ?",
                (now, max_events),
            )
            for row_id, body in rows:
                if bodies and size + len(body) > max_bytes:
                    break
                ids.append(row_id)
                bodies.append(body)
                size += len(body)
            self._db.executemany(
                "UPDATE events SET lease_until = ?, lease_pid = ? WHERE id = ?",
                [(now + self._lease_seconds, os.getpid(), row_id) for row_id in ids],
            )
            self._db.execute("COMMIT")
        return ids, bodies

    def ack(self, ids: list[int]) -> None:
        """The gateway has these rows: delete them."""
        with self._lock:
            self._db.executemany("DELETE FROM events WHERE id = ?", [(i,) for i in ids])

    def release(self, ids: list[int], *, count_attempt: bool) -> set[int]:
        """Give rows back for a later try; returns the ids that reached `max_attempts` and left."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "UPDATE events SET lease_until = 0, attempts = attempts + ? WHERE id = ?",
                [(int(count_attempt), i) for i in ids],
            )
            spent = self._db.execute(
                f"DELETE FROM events WHERE attempts >= ? AND id IN ({','.join('?' * len(ids))})"  # noqa: S608 - placeholders only
                " RETURNING id",
                (self._max_attempts, *ids),
            ).fetchall()
            self._db.execute("COMMIT")
        return {row_id for (row_id,) in spent}

    def __len__(self) -> int:
        with self._lock:
            if self._closed_count is not None:
                return self._closed_count
            (count,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
        return int(count)

    def last_id(self) -> int:
        """The id of the newest row ever stored here (0 for a new spool)."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
            found = row.fetchone()
        return int(found[0]) if found else 0

    def holds_through(self, row_id: int) -> bool:
        """Whether any row with an id up to `row_id` is still waiting to be sent."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM events WHERE id <= ? LIMIT 1", (row_id,))
            return row.fetchone() is not None

    def close(self) -> None:
        """Free this process's leases and close the database."""
        with self._lock:
            if self._closed_count is not None:
                return
            self._db.execute(
                "UPDATE events SET lease_until = 0 WHERE lease_pid = ?", (os.getpid(),)
            )
            (self._closed_count,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
            self._db.close()


_MAX_ROW_ID = 2**63 - 1


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a previous life of this pid's process cannot still hold leases
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
