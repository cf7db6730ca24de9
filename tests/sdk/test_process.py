"""The SDK across process boundaries: interpreter exit, fork, a killed process, the spool.

Each scenario that exits, forks or dies runs in a child process (`tests/sdk/scripts/`)
started with `sys.executable`; the receiver is a real HTTP server on loopback in this
process. A gateway that is down is a port bound on 127.0.0.1 with nothing listening.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from headwater.sdk import AnyMessage, Client, ClientOptions, Stats, Track, WireCodec
from headwater.sdk.testing import LoopbackReceiver

SCRIPTS = Path(__file__).parent / "scripts"
CHILD_TIMEOUT = 30.0  # seconds; every child ends on its own well before
WHEN = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)  # one timestamp: every event one size


class ForkReport(msgspec.Struct, kw_only=True):
    """A line printed by `scripts/fork_then_flush.py`."""

    side: str
    flushed: bool
    stats: Stats
    exit_code: int | None = None


@pytest.fixture
def dead_gateway() -> Iterator[str]:
    """The URL of a port that refuses connections: bound, so nobody else takes it, not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        yield f"http://127.0.0.1:{port}"


def event_ids(series: int, count: int) -> list[str]:
    """`count` distinct UUIDv7-shaped ids, all of one length."""
    return [f"0196{series:04x}-0000-7000-8000-{n:012x}" for n in range(count)]


def received_ids(receiver: LoopbackReceiver) -> list[str]:
    return [m.event_id for m in receiver.messages]


def statuses(receiver: LoopbackReceiver) -> list[int]:
    return [status for status, _, _ in receiver.requests]


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


def spool_options(spool: Path, **changes: object) -> ClientOptions:
    """Options of a client on `spool` that sends only when asked (`flush`) or at exit."""
    return msgspec.structs.replace(ClientOptions(spool_dir=spool, flush_interval=60.0), **changes)


def spooling_client(spool: Path, host: str, **changes: object) -> Client:
    return Client("test-write-key", host=host, options=spool_options(spool, **changes))


def reported_stats(done: subprocess.CompletedProcess[str]) -> Stats:
    """The `stats()` a child printed as its one line of output."""
    assert done.stdout, done.stderr
    return msgspec.json.decode(done.stdout, type=Stats)


RECORD_HEADER = 8  # the spool's record: a 4-byte length and a CRC-32 before the event


def record_size(event_id: str) -> int:
    """Bytes that `scripts/spool_offline.py` stores for the event `event_id`, header included."""
    message = Track(
        event_id=event_id, event="offline_event", distinct_id="u_offline", timestamp=WHEN
    )
    return RECORD_HEADER + len(WireCodec("json", compress=False).encode_message(message))


# -- interpreter exit -------------------------------------------------------------


def test_exit_delivers_what_is_queued(receiver: LoopbackReceiver) -> None:
    ids = event_ids(1, 3)

    done = run_script("emit_then_exit.py", receiver.url, *ids, "--report")

    assert received_ids(receiver) == ids
    assert statuses(receiver) == [200]
    stats = reported_stats(done)
    assert (stats.enqueued, stats.sent, stats.dropped, stats.queued) == (3, 3, 0, 0)


def test_exit_with_the_gateway_down_ends_within_shutdown_timeout(dead_gateway: str) -> None:
    ids = event_ids(2, 3)

    # The child would retry for tens of seconds (max_retries=8, backoff_base=0.5): shutdown_timeout
    # ends it; `run_script` fails on a non-zero exit and subprocess.run's timeout on a hang.
    done = run_script(
        "emit_then_exit.py", dead_gateway, *ids, "--report", "--shutdown-timeout", "0.3"
    )

    stats = reported_stats(done)
    assert (stats.enqueued, stats.sent, stats.queued) == (3, 0, 0)
    assert stats.dropped_by_reason == {"shutdown": 3}
    assert stats.last_error is not None
    assert stats.last_error.startswith("TransportError: ")


def test_exit_delivers_the_events_of_a_client_no_longer_referenced(
    receiver: LoopbackReceiver,
) -> None:
    # A client made inside a function (a request handler, a `main()`) and never stored:
    # its consumer thread still holds the events, and the exit hook must still send them.
    ids = event_ids(3, 3)

    run_script("emit_then_exit.py", receiver.url, *ids, "--unreferenced")

    assert received_ids(receiver) == ids


def test_exit_with_a_spool_reports_stats_after_shutdown(
    receiver: LoopbackReceiver, tmp_path: Path
) -> None:
    # `stats()` after `shutdown()` (here: the exit hook) is how an application logs what
    # its client did; with a spool it must not fail on the closed database.
    ids = event_ids(4, 3)

    done = run_script("emit_then_exit.py", receiver.url, *ids, "--report", "--spool", str(tmp_path))

    assert received_ids(receiver) == ids
    stats = reported_stats(done)
    assert (stats.enqueued, stats.sent, stats.dropped, stats.spooled) == (3, 3, 0, 0)


def test_exit_while_backing_off_keeps_later_events_in_the_spool(
    receiver: LoopbackReceiver, tmp_path: Path
) -> None:
    # The first event is answered 503 with Retry-After: 30, so the child's consumer is
    # pausing when the next two are queued and the interpreter exits (shutdown_timeout
    # 0.3). With a spool, none of the three may be lost: the next process sends them.
    ids = event_ids(5, 3)
    receiver.answer(503, headers={"Retry-After": "30"})

    run_script(
        "emit_then_exit.py",
        receiver.url,
        *ids,
        "--spool",
        str(tmp_path),
        "--shutdown-timeout",
        "0.3",
        "--in-backoff",
        "1",
    )

    with spooling_client(tmp_path, receiver.url) as client:
        assert client.flush(timeout=10)
        stats = client.stats()
    assert sorted(received_ids(receiver)) == ids
    assert statuses(receiver) == [503, 200]
    assert (stats.sent, stats.spooled) == (3, 0)


# -- fork -------------------------------------------------------------------------


def run_fork(receiver: LoopbackReceiver, *extra: str) -> list[ForkReport]:
    done = run_script(
        "fork_then_flush.py",
        receiver.url,
        "--parent-ids",
        *event_ids(6, 3),
        "--child-ids",
        *event_ids(7, 3),
        *extra,
    )
    return [msgspec.json.decode(line, type=ForkReport) for line in done.stdout.splitlines()]


def batch_ids(receiver: LoopbackReceiver) -> list[list[str]]:
    return sorted([m.event_id for m in batch.batch] for batch in receiver.batches)


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
def test_forked_child_sends_its_own_events_and_not_the_parents(
    receiver: LoopbackReceiver, tmp_path: Path, spool: bool
) -> None:
    extra = ["--spool", str(tmp_path)] if spool else []

    child, parent = run_fork(receiver, *extra)

    # One batch each: the child's consumer sent only the child's events, the parent's
    # consumer only the parent's, and nothing twice.
    assert batch_ids(receiver) == [event_ids(6, 3), event_ids(7, 3)]
    assert statuses(receiver) == [200, 200]
    assert (child.side, child.flushed) == ("child", True)
    assert (child.stats.enqueued, child.stats.sent, child.stats.dropped) == (3, 3, 0)
    assert (child.stats.queued, child.stats.spooled) == (0, 0)
    assert (parent.side, parent.flushed, parent.exit_code) == ("parent", True, 0)
    assert (parent.stats.enqueued, parent.stats.sent, parent.stats.dropped) == (3, 3, 0)
    assert (parent.stats.queued, parent.stats.spooled) == (0, 0)


def test_forked_child_that_exits_normally_sends_its_events_at_exit(
    receiver: LoopbackReceiver,
) -> None:
    (parent,) = run_fork(receiver, "--child-exit", "interpreter")

    assert (parent.flushed, parent.exit_code, parent.stats.sent) == (True, 0, 3)
    assert batch_ids(receiver) == [event_ids(6, 3), event_ids(7, 3)]


# -- the spool --------------------------------------------------------------------


def test_spool_survives_a_killed_process(
    receiver: LoopbackReceiver, dead_gateway: str, tmp_path: Path
) -> None:
    ids = event_ids(8, 50)
    command = [sys.executable, str(SCRIPTS / "spool_offline.py"), dead_gateway, str(tmp_path)]
    command += [WHEN.isoformat(), *ids, "--then", "hang"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as writer:
        assert writer.stdout is not None
        ready = writer.stdout.readline()  # the child prints or exits within its deadline
        writer.kill()
        _, stderr = writer.communicate(timeout=CHILD_TIMEOUT)
    assert ready, stderr
    before = msgspec.json.decode(ready, type=Stats)
    assert (before.spooled, before.sent, before.queued) == (50, 0, 0)
    assert writer.returncode == -signal.SIGKILL  # no exit hook, no shutdown ran

    # The killed process still holds leases on all 50 rows, for 60 s (3 request_timeouts
    # and a backoff_cap): the next process to open the spool frees them as its own.
    with spooling_client(tmp_path, receiver.url) as client:
        assert client.stats().spooled == 50
        assert client.flush(timeout=10)
        after = client.stats()
    assert received_ids(receiver) == ids
    assert (after.sent, after.spooled, after.dropped) == (50, 0, 0)


def test_a_full_spool_refuses_new_events_by_default(
    receiver: LoopbackReceiver, dead_gateway: str, tmp_path: Path
) -> None:
    ids = event_ids(9, 25)
    size = record_size(ids[0])
    limit = 10 * size + size // 2  # room for 10 events, not 11

    done = run_script(
        "spool_offline.py", dead_gateway, str(tmp_path), WHEN.isoformat(), *ids,
        "--max-bytes", str(limit),
    )  # fmt: skip

    # on_full="drop_newest": the first ten are kept, the other calls returned None.
    offline = reported_stats(done)
    assert offline.dropped_by_reason == {"spool_full": 15}
    assert (offline.spooled, offline.enqueued, offline.sent, offline.given_up) == (10, 10, 0, 0)
    # The child configures no logging: Python's last-resort handler shows the one warning.
    assert done.stderr.splitlines() == [
        f"event not accepted: spool full: {10 * size} bytes waiting, spool_max_bytes={limit}"
        " (on_full='drop_newest') (further refusals counted in stats())"
    ]
    with spooling_client(tmp_path, receiver.url, spool_max_bytes=limit) as client:
        assert client.flush(timeout=10)
        after = client.stats()
    assert received_ids(receiver) == ids[:10]
    assert (after.sent, after.spooled, after.dropped) == (10, 0, 0)


def test_a_full_spool_evicts_the_oldest_events_with_drop_oldest(
    receiver: LoopbackReceiver, dead_gateway: str, tmp_path: Path
) -> None:
    ids = event_ids(17, 25)
    size = record_size(ids[0])
    limit = 10 * size + size // 2

    done = run_script(
        "spool_offline.py", dead_gateway, str(tmp_path), WHEN.isoformat(), *ids,
        "--max-bytes", str(limit), "--on-full", "drop_oldest",
    )  # fmt: skip

    # Every call returned its id; the fifteen oldest were then evicted for newer ones.
    offline = reported_stats(done)
    assert offline.dropped_by_reason == {"spool_full": 15}
    assert (offline.spooled, offline.enqueued, offline.sent, offline.given_up) == (10, 25, 0, 15)
    assert offline.given_up_reason == (
        f"spool_full: evicted for newer events (on_full='drop_oldest', spool_max_bytes={limit})"
    )
    with spooling_client(tmp_path, receiver.url, spool_max_bytes=limit) as client:
        assert client.flush(timeout=10)
        after = client.stats()
    assert received_ids(receiver) == ids[15:]
    assert (after.sent, after.spooled, after.dropped) == (10, 0, 0)


def test_a_full_spool_with_block_waits_then_refuses(dead_gateway: str, tmp_path: Path) -> None:
    ids = event_ids(18, 3)
    size = record_size(ids[0])
    with spooling_client(
        tmp_path, dead_gateway, spool_max_bytes=2 * size, on_full="block", block_timeout=0.05
    ) as client:
        returned = [
            client.capture(
                "offline_event", distinct_id="u_offline", timestamp=WHEN, event_id=event_id
            )
            for event_id in ids
        ]
        stats = client.stats()
        client.shutdown(timeout=0)
    # Nothing is delivered while the gateway is down, so no room came within block_timeout.
    assert returned == [*ids[:2], None]
    assert (stats.spooled, stats.dropped_by_reason, stats.given_up) == (2, {"spool_full": 1}, 0)


def test_spool_eviction_never_counts_a_delivered_event_as_lost(
    receiver: LoopbackReceiver, tmp_path: Path
) -> None:
    # Five events are being sent (answered 503, Retry-After: 2) when fifteen more overflow
    # the spool (room for 10) with on_full="drop_oldest". Events being sent are never
    # evicted: the five are delivered, five more fit, and each of the ten after them evicts
    # the oldest unread one. (The fifteen are captured within the 2 s pause: no assertion
    # on time, but the scenario needs that much of the host.)
    ids = event_ids(10, 20)
    size = record_size(ids[0])
    receiver.answer(503, headers={"Retry-After": "2"})
    with spooling_client(
        tmp_path,
        receiver.url,
        spool_max_bytes=10 * size + size // 2,
        max_batch_events=5,
        on_full="drop_oldest",
    ) as client:
        for event_id in ids[:5]:  # the fifth fills a batch and wakes the consumer
            client.capture(
                "offline_event", distinct_id="u_offline", timestamp=WHEN, event_id=event_id
            )
        while client.stats().retried < 1:  # then the consumer is in its 2 s pause
            time.sleep(0.01)
        for event_id in ids[5:]:
            client.capture(
                "offline_event", distinct_id="u_offline", timestamp=WHEN, event_id=event_id
            )
        assert client.flush(timeout=10) is False  # ten accepted events were evicted
        stats = client.stats()

    assert received_ids(receiver) == ids[:5] + ids[15:]
    assert statuses(receiver) == [503, 200, 200]
    assert (stats.sent, stats.given_up, stats.dropped_by_reason) == (10, 10, {"spool_full": 10})
    assert (stats.enqueued, stats.spooled) == (20, 0)


def test_spool_outlasts_an_outage_longer_than_max_retries(
    receiver: LoopbackReceiver, tmp_path: Path
) -> None:
    ids = event_ids(11, 20)
    receiver.answer(503, times=12, headers={"Retry-After": "0"})

    with spooling_client(tmp_path, receiver.url, max_retries=2) as client:
        for event_id in ids:
            client.capture("outage_event", distinct_id="u_outage", event_id=event_id)
        assert client.flush(timeout=10)
        stats = client.stats()

    assert received_ids(receiver) == ids
    assert statuses(receiver) == [503] * 12 + [200]
    assert (stats.sent, stats.retried, stats.dropped, stats.spooled) == (20, 12, 0, 0)


POISON_OPTIONS: dict[str, object] = {
    "max_retries": 1,  # two requests per lease of the batch
    "spool_max_attempts": 2,  # two leases, then the batch is dropped
    "backoff_base": 0.001,
    "backoff_cap": 0.01,
}


def test_poison_batch_is_dropped_after_its_attempts(
    receiver: LoopbackReceiver, tmp_path: Path
) -> None:
    poison, later = event_ids(12, 3), event_ids(13, 3)
    receiver.answer(500, times=4)

    with spooling_client(tmp_path, receiver.url, **POISON_OPTIONS) as client:
        for event_id in poison:
            client.capture("poison_event", distinct_id="u_poison", event_id=event_id)
        assert client.flush(timeout=10) is False
        dropped = client.stats()
        for event_id in later:
            client.capture("later_event", distinct_id="u_later", event_id=event_id)
        assert client.flush(timeout=10) is True
        stats = client.stats()

    assert (dropped.dropped_by_reason, dropped.spooled) == ({"retries_exhausted": 3}, 0)
    assert received_ids(receiver) == later
    assert statuses(receiver) == [500, 500, 500, 500, 200]
    assert (stats.sent, stats.retried, stats.spooled) == (3, 2, 0)
    assert stats.dropped_by_reason == {"retries_exhausted": 3}


def test_poison_batch_does_not_hold_back_later_batches(
    receiver: LoopbackReceiver, dead_gateway: str, tmp_path: Path
) -> None:
    # Six events wait in the spool (left by a process whose gateway was down), sent in
    # batches of three: the first batch fails, the second goes through before the first
    # is tried again, and the first is dropped after its second lease.
    poison, later = event_ids(14, 3), event_ids(15, 3)
    run_script("spool_offline.py", dead_gateway, str(tmp_path), WHEN.isoformat(), *poison, *later)
    receiver.answer(500, times=2)
    receiver.answer(200)
    receiver.answer(500, times=2)

    with spooling_client(tmp_path, receiver.url, max_batch_events=3, **POISON_OPTIONS) as client:
        assert client.flush(timeout=10) is False
        stats = client.stats()

    assert received_ids(receiver) == later
    assert statuses(receiver) == [500, 500, 200, 500, 500]
    assert (stats.sent, stats.retried, stats.spooled) == (3, 2, 0)
    assert stats.dropped_by_reason == {"retries_exhausted": 3}


def test_poison_batch_dropped_from_the_spool_reaches_on_error_with_its_events(
    receiver: LoopbackReceiver, tmp_path: Path
) -> None:
    # README: "The events of a batch given up on are counted and passed to
    # `on_error(exc, messages)`" -- with a spool as without.
    poison = event_ids(16, 3)
    receiver.answer(500, times=4)
    reported: list[tuple[str, list[str]]] = []

    def on_error(exc: Exception, messages: list[AnyMessage]) -> None:
        reported.append((type(exc).__name__, [m.event_id for m in messages]))

    options = spool_options(tmp_path, **POISON_OPTIONS)
    with Client("test-write-key", host=receiver.url, options=options, on_error=on_error) as hw:
        for event_id in poison:
            hw.capture("poison_event", distinct_id="u_poison", event_id=event_id)
        assert hw.flush(timeout=10) is False

    assert reported == [("ServerError", poison)]
