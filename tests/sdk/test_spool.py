"""The durable spool: what `track()` returned survives a SIGKILL and reaches the gateway once.

Processes that track, die or flush are children started with `sys.executable`
(`tests/sdk/scripts/`); the gateway is the real one (uvicorn in a thread, chDB, Redis),
or a `LoopbackReceiver`, on loopback in this process. A gateway that is down is a bound
port with nothing listening.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from headwater.sdk import AsyncClient, Client, ClientOptions, Stats, Track, WireCodec
from headwater.sdk.testing import LoopbackReceiver
from tests.gateway.conftest import RunningGateway

SCRIPTS = Path(__file__).parent / "scripts"
CHILD_TIMEOUT = 30.0  # seconds; every child ends on its own well before
WHEN = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)  # one timestamp: every event one size
RECORD_HEADER = 8  # the spool's record: a 4-byte length and a CRC-32 before the event


class FlushReport(msgspec.Struct, kw_only=True):
    """The line `scripts/spool_flush.py` prints."""

    flushed: bool
    stats: Stats


@pytest.fixture
def dead_gateway() -> Iterator[str]:
    """The URL of a port that refuses connections: bound, so nobody else takes it, not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def event_id(series: int, n: int) -> str:
    """Event `n` of `series`, as the child scripts name it."""
    return f"0196{series:04x}-0000-7000-8000-{n:012x}"


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `scripts/name` to its end; fail with its stderr when it did not exit 0."""
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def flush_spool(host: str, spool: Path, *extra: str) -> FlushReport:
    """A new process opens `spool`, flushes it to `host` and shuts down."""
    done = run_script("spool_flush.py", host, str(spool), *extra)
    return msgspec.json.decode(done.stdout, type=FlushReport)


def track_until_killed(host: str, spool: Path, series: int, client: str, count: int) -> list[str]:
    """Run `scripts/track_until_killed.py`, SIGKILL it after `count` ids; every id it printed."""
    command = [sys.executable, str(SCRIPTS / "track_until_killed.py"), host, str(spool)]
    command += [str(series), "--client", client]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        lines = [child.stdout.readline() for _ in range(count)]
        child.kill()
        child.wait(timeout=CHILD_TIMEOUT)
        # Through the same file object: readline() may hold later lines in its buffer,
        # which communicate() (reading the pipe itself) would miss.
        rest, stderr = child.stdout.read(), child.stderr.read()
    assert child.returncode == -signal.SIGKILL, stderr  # no exit hook, no shutdown ran
    assert all(line.endswith("\n") for line in lines), stderr
    # A line cut by the kill is not a returned id: keep whole lines only.
    return [line.strip() for line in lines] + rest.split("\n")[:-1]


def stored_ids(gw: RunningGateway, distinct_id: str) -> list[str]:
    """Every row of `events` for `distinct_id`, not merged: a duplicate would show twice."""
    rows = gw.rows(
        "SELECT toString(event_id) FROM {db}.events WHERE distinct_id = {d:String}",
        d=distinct_id,
    )
    return [row[0] for row in rows]


def spool_files(spool: Path) -> list[str]:
    return sorted(path.name for path in spool.iterdir())


def capture_offline(hw: Client | AsyncClient, ids: list[str]) -> list[str | None]:
    return [
        hw.capture("offline_event", distinct_id="u_offline", timestamp=WHEN, event_id=i)
        for i in ids
    ]


def record_size(event: str) -> int:
    """What `scripts/spool_offline.py` writes for the event `event` (header included)."""
    message = Track(event_id=event, event="offline_event", distinct_id="u_offline", timestamp=WHEN)
    return RECORD_HEADER + len(WireCodec("json", compress=False).encode_message(message))


def kill_offline_writer(host: str, spool: Path, ids: list[str]) -> None:
    """Run `scripts/spool_offline.py` (gateway down) and SIGKILL it once it tried to send."""
    command = [sys.executable, str(SCRIPTS / "spool_offline.py"), host, str(spool)]
    command += [WHEN.isoformat(), *ids, "--then", "hang"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as writer:
        assert writer.stdout is not None
        ready = writer.stdout.readline()
        writer.kill()
        _, stderr = writer.communicate(timeout=CHILD_TIMEOUT)
    assert ready, stderr
    assert writer.returncode == -signal.SIGKILL


# -- a SIGKILL while tracking -----------------------------------------------------


@pytest.mark.parametrize("child_gateway", ["up", "down"])
@pytest.mark.parametrize("client", ["thread", "asyncio"])
def test_every_id_track_returned_before_a_sigkill_is_stored_once(
    gateway: RunningGateway, dead_gateway: str, tmp_path: Path, client: str, child_gateway: str
) -> None:
    series = {"thread": 1, "asyncio": 2}[client] * 16 + {"up": 1, "down": 2}[child_gateway]
    host = gateway.url if child_gateway == "up" else dead_gateway

    # The child tracks 1,000 events a second, delivering as it goes when its gateway is up;
    # it is killed at some point after its 1,500th call returned.
    printed = track_until_killed(host, tmp_path, series, client, count=1500)
    report = flush_spool(gateway.url, tmp_path, "--client", client)

    assert printed == [event_id(series, n) for n in range(len(printed))]
    stored = stored_ids(gateway, "u_killed")
    # Every id whose call returned is stored, and at most the one call that the kill
    # interrupted between its return and its print; nothing is stored twice.
    missing, extra = sorted({*printed} - {*stored}), sorted({*stored} - {*printed})
    assert (missing, extra) in (([], []), ([], [event_id(series, len(printed))])), report
    assert len(stored) == len(set(stored))
    assert report.flushed is True
    assert (report.stats.spooled, report.stats.dropped, report.stats.given_up) == (0, 0, 0)
    if child_gateway == "down":  # the child sent nothing: the new process sent everything
        assert report.stats.sent == len(stored)
    assert spool_files(tmp_path) == []  # every segment and lock file was settled and removed


def test_three_processes_tracking_into_one_spool_and_killed_lose_nothing(
    receiver: LoopbackReceiver, dead_gateway: str, tmp_path: Path
) -> None:
    # Three writers on one directory at once, each with its own lock and segments, all
    # killed while their gateway is down: one new process sends everything, each once.
    series = [21, 22, 23]
    command = [sys.executable, str(SCRIPTS / "track_until_killed.py"), dead_gateway, str(tmp_path)]
    children = [
        subprocess.Popen(
            [*command, str(s)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for s in series
    ]
    printed: list[list[str]] = []
    for child in children:
        with child:
            assert child.stdout is not None
            assert child.stderr is not None
            lines = [child.stdout.readline() for _ in range(300)]
            child.kill()
            child.wait(timeout=CHILD_TIMEOUT)
            rest = child.stdout.read()
            assert child.returncode == -signal.SIGKILL, child.stderr.read()
        printed.append([line.strip() for line in lines] + rest.split("\n")[:-1])
    report = flush_spool(receiver.url, tmp_path)

    delivered = [m.event_id for m in receiver.messages]
    assert len(delivered) == len(set(delivered))  # none twice
    for s, ids in zip(series, printed, strict=True):
        mine = {i for i in delivered if i.startswith(f"0196{s:04x}-")}
        assert mine in ({*ids}, {*ids, event_id(s, len(ids))})
    assert (report.flushed, report.stats.sent, report.stats.spooled) == (True, len(delivered), 0)
    assert spool_files(tmp_path) == []


def reopen_and_flush(
    url: str, spool: Path, caplog: pytest.LogCaptureFixture
) -> tuple[Stats, list[tuple[str, str]]]:
    """A new process's client on `spool`, flushed (True) and closed: its stats when it
    opened, and the (level, message) of what the SDK logged at WARNING meanwhile."""
    with (
        caplog.at_level(logging.WARNING, logger="headwater.sdk"),
        Client("test-key", host=url, options=ClientOptions(spool_dir=spool)) as hw,
    ):
        opened = hw.stats()
        assert hw.flush(timeout=10) is True
    return opened, [(r.levelname, r.getMessage()) for r in caplog.records]


def test_a_restart_after_everything_was_delivered_sends_nothing(
    receiver: LoopbackReceiver, tmp_path: Path
) -> None:
    # The first process delivers 30 events, flushes, and is killed: its spool remembers
    # that they were delivered, so the next process sends none of them again.
    command = [sys.executable, str(SCRIPTS / "spool_flush.py"), receiver.url, str(tmp_path)]
    killed = subprocess.run(
        [*command, "--emit", "30", "--then-kill"],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    first = msgspec.json.decode(killed.stdout, type=FlushReport)
    again = flush_spool(receiver.url, tmp_path)

    assert (first.flushed, first.stats.sent) == (True, 30)
    assert len(receiver.messages) == 30
    assert [len(batch.batch) for batch in receiver.batches] == [30]
    assert (again.flushed, again.stats.sent, again.stats.spooled) == (True, 0, 0)
    assert spool_files(tmp_path) == []


# -- a record cut short ----------------------------------------------------------


SEGMENT_BYTES = 4 * 1024 * 1024  # a segment of a spool with the default spool_max_bytes


# Where in the last record (from its start) which bytes are written, and what that stands for.
DAMAGES = {
    "header not written": (0, bytes(RECORD_HEADER)),  # killed between body and header
    "header half written": (4, bytes(4)),  # killed inside the header's copy
    "body garbled": (RECORD_HEADER + 3, b"#"),  # a power cut
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_torn_last_record_is_skipped_and_the_rest_sent(
    receiver: LoopbackReceiver,
    dead_gateway: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    # A process killed while copying its last record leaves it without a whole header (or,
    # after a power cut, garbled). The next process sends the whole records, skips that one.
    ids = [event_id(3, n) for n in range(5)]
    kill_offline_writer(dead_gateway, tmp_path, ids)
    [segment] = [p for p in tmp_path.iterdir() if p.suffix == ".seg"]
    size = record_size(ids[0])
    assert segment.stat().st_size == SEGMENT_BYTES  # allocated ahead, zeros after the records
    at, data = DAMAGES[damage]
    with segment.open("r+b") as file:
        file.seek(4 * size + at)
        file.write(data)

    opened, warnings = reopen_and_flush(receiver.url, tmp_path, caplog)

    assert [m.event_id for m in receiver.messages] == ids[:4]
    assert opened.spooled == 4
    assert warnings == [
        (
            "WARNING",
            f"spool: skipped {size} bytes at the end of {segment.name}, a record cut short"
            " when its process died (its call never returned)",
        )
    ]
    assert spool_files(tmp_path) == []


def test_a_segment_cut_inside_its_last_record_is_read_to_that_record(
    receiver: LoopbackReceiver,
    dead_gateway: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A segment whose file ends inside a record (restored from a copy, a file system
    # after a power cut): the record's length points past the end; the rest is sent.
    ids = [event_id(11, n) for n in range(5)]
    kill_offline_writer(dead_gateway, tmp_path, ids)
    [segment] = [p for p in tmp_path.iterdir() if p.suffix == ".seg"]
    size = record_size(ids[0])
    os.truncate(segment, 5 * size - 10)

    opened, warnings = reopen_and_flush(receiver.url, tmp_path, caplog)

    assert [m.event_id for m in receiver.messages] == ids[:4]
    assert opened.spooled == 4
    assert warnings == [
        (
            "WARNING",
            f"spool: skipped {size - 10} bytes at the end of {segment.name}, a record cut short"
            " when its process died (its call never returned)",
        )
    ]
    assert spool_files(tmp_path) == []


# -- two processes on one spool ------------------------------------------------


def test_a_second_process_sends_only_its_own_events_until_the_first_dies(
    receiver: LoopbackReceiver, dead_gateway: str, tmp_path: Path
) -> None:
    first = [event_id(4, n) for n in range(5)]
    second = [event_id(5, n) for n in range(2)]
    command = [sys.executable, str(SCRIPTS / "spool_offline.py"), dead_gateway, str(tmp_path)]
    command += [WHEN.isoformat(), *first, "--then", "hang"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as writer:
        assert writer.stdout is not None
        assert writer.stdout.readline(), "the first process never reported"
        # The first process is alive and holds its lock: this one works beside it.
        with Client("test-key", host=receiver.url, options=ClientOptions(spool_dir=tmp_path)) as hw:
            assert capture_offline(hw, second) == second
            assert hw.flush(timeout=10) is True
            beside = hw.stats()
            locks = sorted(p.suffix for p in tmp_path.iterdir())
        writer.kill()
        writer.communicate(timeout=CHILD_TIMEOUT)
    report = flush_spool(receiver.url, tmp_path)

    assert (beside.sent, beside.spooled) == (2, 0)
    assert locks == [".lock", ".lock", ".seg", ".seg"]
    # Once the first is dead, the next process to open the spool sends what it left.
    assert [m.event_id for m in receiver.messages] == second + first
    assert (report.flushed, report.stats.sent, report.stats.spooled) == (True, 5, 0)
    assert spool_files(tmp_path) == []


def test_a_live_process_takes_over_what_a_dead_one_left(
    receiver: LoopbackReceiver, dead_gateway: str, tmp_path: Path
) -> None:
    # The live process looks for dead writers as it delivers, every 5 s at most: its
    # flushes send its own event at once, and the dead process's once it has looked.
    left = [event_id(9, n) for n in range(4)]
    own = event_id(10, 0)
    command = [sys.executable, str(SCRIPTS / "spool_offline.py"), dead_gateway, str(tmp_path)]
    command += [WHEN.isoformat(), *left, "--then", "hang"]
    options = ClientOptions(spool_dir=tmp_path, flush_interval=60.0)
    with (
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as writer,
        Client("test-key", host=receiver.url, options=options) as hw,
    ):
        assert writer.stdout is not None
        assert writer.stdout.readline(), "the other process never reported"
        assert capture_offline(hw, [own]) == [own]
        writer.kill()
        writer.communicate(timeout=CHILD_TIMEOUT)
        flushes = 0
        while len(receiver.messages) < 5:
            assert flushes < 40, "the dead process's events were never sent"
            assert hw.flush(timeout=10) is True
            flushes += 1
            time.sleep(0.25)
        stats = hw.stats()

    assert [m.event_id for m in receiver.messages] == [own, *left]
    assert (stats.sent, stats.spooled, stats.enqueued) == (5, 0, 1)
    assert spool_files(tmp_path) == []


def track_from_threads(hw: Client | AsyncClient) -> list[str | None]:
    """Eight threads capture 300 events each at once; every id returned."""
    returned: list[list[str | None]] = []

    def track_some(thread: int) -> None:
        returned.append(capture_offline(hw, [event_id(6, thread * 1000 + n) for n in range(300)]))

    threads = [threading.Thread(target=track_some, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [i for ids in returned for i in ids]


def test_a_spool_of_the_sqlite_era_is_named_not_silently_ignored(
    tmp_path: Path, dead_gateway: str, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = tmp_path / "headwater-spool.sqlite3"
    legacy.write_bytes(b"SQLite format 3\x00")

    with (
        caplog.at_level(logging.WARNING, logger="headwater.sdk"),
        Client("test-key", host=dead_gateway, options=ClientOptions(spool_dir=tmp_path)),
    ):
        pass

    assert [r.getMessage() for r in caplog.records] == [
        f"spool: {legacy} was left by an earlier version of the SDK, which kept its spool in"
        " SQLite; its events are not read or sent by this version"
    ]


def test_a_disabled_client_leaves_the_spool_to_others(
    receiver: LoopbackReceiver, dead_gateway: str, tmp_path: Path
) -> None:
    ids = [event_id(12, n) for n in range(3)]
    kill_offline_writer(dead_gateway, tmp_path, ids)
    files = spool_files(tmp_path)

    options = ClientOptions(spool_dir=tmp_path)
    with Client("test-key", host=receiver.url, options=options, disabled=True) as off:
        assert off.capture("e", distinct_id="u") is None
        assert spool_files(tmp_path) == files  # no lock of its own, nothing taken over
        report = flush_spool(receiver.url, tmp_path)

    assert (report.flushed, report.stats.sent) == (True, 3)
    assert [m.event_id for m in receiver.messages] == ids


@pytest.mark.parametrize("kind", ["thread", "asyncio"])
def test_threads_tracking_at_once_lose_nothing(
    receiver: LoopbackReceiver, tmp_path: Path, kind: str
) -> None:
    options = ClientOptions(spool_dir=tmp_path, flush_interval=0.05, max_batch_events=50)
    if kind == "thread":
        with Client("test-key", host=receiver.url, options=options) as hw:
            returned = track_from_threads(hw)
            assert hw.flush(timeout=20) is True
            stats = hw.stats()
    else:

        async def scenario() -> tuple[list[str | None], Stats]:
            async with AsyncClient("test-key", host=receiver.url, options=options) as ahw:
                assert await ahw.flush(timeout=5)  # the delivery task runs on this loop
                ids = await asyncio.to_thread(track_from_threads, ahw)
                assert await ahw.flush(timeout=20) is True
                return ids, ahw.stats()

        returned, stats = asyncio.run(scenario())

    expected = {event_id(6, t * 1000 + n) for t in range(8) for n in range(300)}
    delivered = [m.event_id for m in receiver.messages]
    assert set(returned) == expected
    assert sorted(delivered) == sorted(expected)  # each once
    assert (stats.enqueued, stats.sent, stats.spooled, stats.dropped) == (2400, 2400, 0, 0)


# -- the disk refusing writes ---------------------------------------------------


def test_a_segment_the_disk_refuses_costs_only_the_event_that_needed_it(
    receiver: LoopbackReceiver, dead_gateway: str, tmp_path: Path
) -> None:
    # Segments are allocated whole when they are created, so a full disk shows there. The
    # child may write files of at most 80 KiB (RLIMIT_FSIZE): its 64 KiB segments are
    # allowed, but the 100 KB event needs a segment of its own that is refused, as on a
    # full disk. That call returns None; the events before and after it are kept.
    ids = [event_id(7, n) for n in range(6)]

    done = run_script(
        "spool_offline.py", dead_gateway, str(tmp_path), WHEN.isoformat(), *ids,
        "--max-bytes", str(1024 * 1024), "--file-limit", str(80 * 1024), "--big", "3",
    )  # fmt: skip

    offline = msgspec.json.decode(done.stdout, type=Stats)
    assert (offline.enqueued, offline.spooled, offline.dropped_by_reason) == (
        5,
        5,
        {"spool_full": 1},
    )
    assert done.stderr.splitlines() == [
        "event not accepted: cannot write to the spool: [Errno 27] File too large"
        " (further refusals counted in stats())"
    ]
    report = flush_spool(receiver.url, tmp_path)
    assert [m.event_id for m in receiver.messages] == ids[:3] + ids[4:]
    assert (report.flushed, report.stats.sent) == (True, 5)


# -- encodings ------------------------------------------------------------------


def test_events_left_in_json_are_sent_by_a_msgpack_client(
    receiver: LoopbackReceiver, dead_gateway: str, tmp_path: Path
) -> None:
    ids = [event_id(8, n) for n in range(3)]
    run_script("spool_offline.py", dead_gateway, str(tmp_path), WHEN.isoformat(), *ids)

    options = ClientOptions(spool_dir=tmp_path, encoding="msgpack")
    with Client("test-key", host=receiver.url, options=options) as hw:
        assert hw.flush(timeout=10) is True

    assert [m.event_id for m in receiver.messages] == ids
    assert [headers["Content-Type"] for _, headers, _ in receiver.requests] == [
        "application/msgpack"
    ]
