"""Batches the gateway refuses as too large (413) are split until they fit.

The receiver is a real HTTP server on loopback that answers 413 to a body over
`max_body_bytes` once decompressed, as the gateway does. Every event is one size
(fixed ids, timestamps and padding), and the limit lets four of them through but not
five, so the cut of every request is exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from headwater.sdk import (
    AnyMessage,
    AsyncClient,
    Client,
    ClientOptions,
    Rejected,
    Stats,
    Track,
    WireCodec,
)
from headwater.sdk.testing import TOO_LARGE_BODY, LoopbackReceiver

Errors = list[tuple[Exception, list[AnyMessage]]]

WHEN = datetime(2026, 11, 25, 10, 0, 0, 900000, tzinfo=UTC)
SMALL_PAD = 1000
BIG_PAD = 6000  # alone over the limit, well under max_event_bytes


def event(n: int, *, name: str = "e", pad: int = SMALL_PAD) -> Track:
    return Track(
        event_id=f"0193aaaa-0000-7000-8000-{n:012d}",
        event=name,
        distinct_id="u",
        timestamp=WHEN,
        properties={"pad": "x" * pad},
    )


def encoded_size(message: Track) -> int:
    return len(WireCodec("json", compress=False).encode_message(message))


# Four small events and the batch envelope fit; a fifth does not.
LIMIT = 4 * encoded_size(event(0)) + encoded_size(event(0)) // 2


def emit(hw: Client | AsyncClient, messages: list[Track]) -> list[str | None]:
    return [
        hw.capture(
            m.event,
            distinct_id=m.distinct_id,
            properties=m.properties,
            timestamp=m.timestamp,
            event_id=m.event_id,
        )
        for m in messages
    ]


def deliver(
    kind: str,
    receiver: LoopbackReceiver,
    messages: list[Track],
    options: ClientOptions,
    errors: Errors,
    *,
    flushed: bool = True,
) -> Stats:
    """Emit `messages` with a `kind` client, flush (it returns `flushed`), shut down; its stats."""

    def on_error(exc: Exception, failed: list[AnyMessage]) -> None:
        errors.append((exc, failed))

    if kind == "thread":
        with Client("test-key", host=receiver.url, options=options, on_error=on_error) as hw:
            assert emit(hw, messages) == ids(messages)
            assert hw.flush(timeout=10) is flushed
        return hw.stats()

    async def scenario() -> Stats:
        async with AsyncClient(
            "test-key", host=receiver.url, options=options, on_error=on_error
        ) as ahw:
            assert emit(ahw, messages) == ids(messages)
            assert await ahw.flush(timeout=10) is flushed
        return ahw.stats()

    return asyncio.run(scenario())


def ids(messages: Sequence[AnyMessage]) -> list[str]:
    return [m.event_id for m in messages]


def statuses(receiver: LoopbackReceiver) -> list[int]:
    return [status for status, _, _ in receiver.requests]


def batch_sizes(receiver: LoopbackReceiver) -> list[int]:
    return [len(b.batch) for b in receiver.batches]


def options_for(tmp_path: Path, *, spool: bool, **changes: object) -> ClientOptions:
    options = ClientOptions(flush_interval=60.0, spool_dir=tmp_path if spool else None)
    return msgspec.structs.replace(options, **changes)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the condition never became true"
        time.sleep(0.01)


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
@pytest.mark.parametrize("kind", ["thread", "asyncio"])
def test_a_batch_over_the_limit_arrives_in_halves(tmp_path: Path, kind: str, spool: bool) -> None:
    messages = [event(n) for n in range(10)]
    errors: Errors = []

    with LoopbackReceiver(max_body_bytes=LIMIT) as receiver:
        stats = deliver(kind, receiver, messages, options_for(tmp_path, spool=spool), errors)

    # 10 -> 413; its first half 5 -> 413 -> 3 and 2; its second half 5 -> 413 -> 3 and 2.
    assert statuses(receiver) == [413, 413, 200, 200, 413, 200, 200]
    assert batch_sizes(receiver) == [3, 2, 3, 2]
    assert receiver.messages == messages
    assert errors == []
    assert (stats.sent, stats.retried, stats.dropped, stats.queued, stats.spooled) == (
        10,
        0,
        0,
        0,
        0,
    )


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
@pytest.mark.parametrize("kind", ["thread", "asyncio"])
def test_an_event_over_the_limit_alone_goes_to_on_error(
    tmp_path: Path, kind: str, spool: bool
) -> None:
    big = event(2, name="big", pad=BIG_PAD)
    messages = [event(0), event(1), big, event(3), event(4)]
    errors: Errors = []

    with LoopbackReceiver(max_body_bytes=LIMIT) as receiver:
        options = options_for(tmp_path, spool=spool)
        stats = deliver(kind, receiver, messages, options, errors, flushed=False)

    # 5 -> 413; [0, 1, big] -> 413 -> [0, 1] and [big] -> 413, refused; [3, 4].
    assert statuses(receiver) == [413, 413, 200, 413, 200]
    assert batch_sizes(receiver) == [2, 2]
    assert receiver.messages == [m for m in messages if m is not big]
    big_as_sent = len(receiver.requests[3][2])
    reason = (
        f"gateway rejected the events (413): event 'big' is {encoded_size(big)} bytes encoded"
        f" ({big_as_sent} bytes as sent), over the gateway's body limit: {TOO_LARGE_BODY.decode()}"
    )
    assert [(type(exc), exc.status, str(exc), failed) for exc, failed in errors] == [  # type: ignore[attr-defined]
        (Rejected, 413, reason, [big])
    ]
    assert (stats.sent, stats.retried, stats.dropped_by_reason) == (4, 0, {"rejected": 1})
    assert stats.last_error == f"Rejected: {reason}"
    assert (stats.given_up, stats.given_up_reason) == (1, f"rejected: Rejected: {reason}")
    assert (stats.queued, stats.spooled) == (0, 0)


@pytest.mark.parametrize("stuck", ["first", "second"])
def test_a_split_batch_in_the_spool_is_sent_once_across_a_restart(
    tmp_path: Path, stuck: str
) -> None:
    # 8 events -> 413 -> two halves of 4. One half meets a 503 with a long Retry-After and
    # the client shuts down while waiting: what was delivered leaves the spool, the rest
    # stays in it, and the next client sends exactly the rest.
    messages = [event(n) for n in range(8)]
    options = options_for(tmp_path, spool=True, shutdown_timeout=0.2)
    with LoopbackReceiver(max_body_bytes=LIMIT) as receiver:
        if stuck == "second":
            receiver.answer(200)
        receiver.answer(503, headers={"Retry-After": "60"})
        before = Client("test-key", host=receiver.url, options=options)
        emit(before, messages)
        before.flush(timeout=0)  # wakes the consumer; nothing to wait for yet
        wait_until(lambda: 503 in statuses(receiver))
        assert before.shutdown() is False  # it was still waiting to retry

        delivered = ids(receiver.messages)
        with Client("test-key", host=receiver.url, options=options) as after:
            assert after.stats().spooled == 8 - len(delivered)
            assert after.flush(timeout=10)
        with Client("test-key", host=receiver.url, options=options) as again:
            assert again.flush(timeout=10)

    first_client = [413, 503] if stuck == "first" else [413, 200, 503]
    restarted = [413, 200, 200] if stuck == "first" else [200]
    assert statuses(receiver) == first_client + restarted
    assert delivered == ([] if stuck == "first" else ids(messages[:4]))
    assert receiver.messages == messages
    assert (before.stats().sent, before.stats().spooled, before.stats().dropped) == (
        len(delivered),
        8 - len(delivered),
        0,
    )
    assert (after.stats().sent, after.stats().spooled, after.stats().dropped) == (
        8 - len(delivered),
        0,
        0,
    )
    assert (again.stats().sent, again.stats().spooled) == (0, 0)


def test_shutdown_while_a_half_waits_counts_every_unsent_event(tmp_path: Path) -> None:
    # Without a spool, the half being retried and the half waiting behind it are lost at
    # shutdown: both are counted, none twice, none as sent.
    messages = [event(n) for n in range(8)]
    options = options_for(tmp_path, spool=False, shutdown_timeout=0.2)
    with LoopbackReceiver(max_body_bytes=LIMIT) as receiver:
        receiver.answer(503, headers={"Retry-After": "60"})
        hw = Client("test-key", host=receiver.url, options=options)
        emit(hw, messages)
        hw.flush(timeout=0)
        wait_until(lambda: 503 in statuses(receiver))
        assert hw.shutdown() is False

    assert statuses(receiver) == [413, 503]
    stats = hw.stats()
    assert (stats.sent, stats.retried, stats.dropped_by_reason) == (0, 1, {"shutdown": 8})


def test_a_single_event_refused_in_sync_mode_goes_to_on_error() -> None:
    errors: Errors = []
    big = event(0, name="big", pad=BIG_PAD)
    with LoopbackReceiver(max_body_bytes=LIMIT) as receiver:
        hw = Client(
            "test-key",
            host=receiver.url,
            sync_mode=True,
            on_error=lambda exc, failed: errors.append((exc, failed)),
        )
        emit(hw, [big, event(1)])
        hw.shutdown()

    assert statuses(receiver) == [413, 200]
    assert [(type(exc), failed) for exc, failed in errors] == [(Rejected, [big])]
    assert hw.stats().dropped_by_reason == {"rejected": 1}
