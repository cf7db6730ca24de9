"""The asyncio client against a real HTTP receiver on loopback.

Every test drives its own event loop with `asyncio.run` and shuts its client down
inside it (`async with`, or `finally`), so no task, socket or loop outlives the test.
Clients use a long `flush_interval`: only `flush()`, `shutdown()` and full batches
send, which makes the cut of every batch exact.
"""

from __future__ import annotations

import asyncio
import gzip
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from headwater.sdk import (
    LIB,
    Alias,
    AnyMessage,
    AsyncClient,
    ClientClosed,
    ClientOptions,
    Identify,
    Rejected,
    Stats,
    Track,
)
from headwater.sdk.testing import LoopbackReceiver

from .events import OrderCompleted, Plan, PlanChanged

Errors = list[tuple[Exception, list[AnyMessage]]]

WHEN = datetime(2026, 11, 25, 10, 0, 0, 900000, tzinfo=UTC)
SCRIPTED_BODY = '{"error":"scripted"}'  # what LoopbackReceiver answers to a scripted status


def make_client(
    receiver: LoopbackReceiver,
    *,
    on_error: Callable[[Exception, list[AnyMessage]], object] | None = None,
    debug: bool = False,
    **options: Any,
) -> AsyncClient:
    options.setdefault("flush_interval", 60.0)
    return AsyncClient(
        "test-key",
        host=receiver.url,
        options=ClientOptions(**options),
        on_error=on_error,
        debug=debug,
    )


def event_id(n: int) -> str:
    return f"0193aaaa-0000-7000-8000-{n:012d}"


def ids(messages: list[AnyMessage]) -> list[str]:
    return [m.event_id for m in messages]


def statuses(receiver: LoopbackReceiver) -> list[int]:
    return [status for status, _, _ in receiver.requests]


def test_each_call_returns_its_id_and_arrives_with_its_fields(receiver: LoopbackReceiver) -> None:
    async def scenario() -> tuple[list[str | None], bool, Stats]:
        async with make_client(receiver) as hw:
            returned = [
                hw.track(
                    OrderCompleted(order_id="o1", revenue_cents=1299),
                    distinct_id="u_42",
                    timestamp=WHEN,
                ),
                hw.capture(
                    "page_view", distinct_id="u_42", properties={"path": "/"}, timestamp=WHEN
                ),
                hw.identify("u_42", {"email": "a@b.c", "plan": "pro"}, timestamp=WHEN),
                hw.alias("anon-7f3a", "u_42", timestamp=WHEN, event_id=event_id(1)),
            ]
            flushed = await hw.flush(timeout=5)
            return returned, flushed, hw.stats()

    returned, flushed, stats = asyncio.run(scenario())

    assert flushed is True
    assert [
        (type(m), m.event, m.distinct_id, m.timestamp, m.properties) for m in receiver.messages
    ] == [
        (
            Track,
            "order_completed",
            "u_42",
            WHEN,
            {"order_id": "o1", "revenue_cents": 1299, "coupon": None},
        ),
        (Track, "page_view", "u_42", WHEN, {"path": "/"}),
        (Identify, "$identify", "u_42", WHEN, {"$set": {"email": "a@b.c", "plan": "pro"}}),
        (Alias, "$create_alias", "anon-7f3a", WHEN, {"alias": "u_42"}),
    ]
    assert ids(receiver.messages) == returned
    assert returned[3] == event_id(1)
    assert {uuid.UUID(str(i)).version for i in returned[:3]} == {7}
    assert (stats.enqueued, stats.sent, stats.dropped, stats.queued) == (4, 4, 0, 0)
    [(status, headers, _)] = receiver.requests
    assert status == 200
    assert {name: headers[name] for name in ("Authorization", "User-Agent", "Content-Type")} == {
        "Authorization": "Bearer test-key",
        "User-Agent": LIB,
        "Content-Type": "application/json",
    }
    assert receiver.batches[0].lib == LIB


def test_identify_carries_set_once_next_to_set(receiver: LoopbackReceiver) -> None:
    async def scenario() -> None:
        async with make_client(receiver) as hw:
            hw.identify("u_1", {"plan": "pro"}, set_once={"first_seen": "2026-01-01"})
            assert await hw.flush(timeout=5)

    asyncio.run(scenario())

    assert [m.properties for m in receiver.messages] == [
        {"$set": {"plan": "pro"}, "$set_once": {"first_seen": "2026-01-01"}}
    ]


def test_batches_are_cut_at_max_batch_events(receiver: LoopbackReceiver) -> None:
    async def scenario() -> tuple[list[str | None], bool, Stats]:
        async with make_client(receiver, max_batch_events=4) as hw:
            sent = [hw.capture("e", distinct_id="u", properties={"n": n}) for n in range(10)]
            flushed = await hw.flush(timeout=5)
            return sent, flushed, hw.stats()

    sent, flushed, stats = asyncio.run(scenario())

    assert flushed is True
    assert [len(batch.batch) for batch in receiver.batches] == [4, 4, 2]
    assert ids(receiver.messages) == sent
    assert [m.properties["n"] for m in receiver.messages] == list(range(10))
    assert stats.sent == 10


async def until_received(receiver: LoopbackReceiver, count: int) -> None:
    while len(receiver.messages) < count:
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("from_thread", [False, True], ids=["loop-thread", "other-thread"])
def test_a_full_batch_leaves_without_a_flush(receiver: LoopbackReceiver, from_thread: bool) -> None:
    def capture_a_batch(hw: AsyncClient) -> list[str | None]:
        return [hw.capture("e", distinct_id="u", properties={"n": n}) for n in range(2)]

    async def scenario() -> tuple[list[str | None], Stats]:
        async with make_client(receiver, max_batch_events=2) as hw:
            assert await hw.flush(timeout=5)  # the delivery task now runs, idle
            if from_thread:  # as from run_in_executor: the queue wakes the loop thread-safely
                sent = await asyncio.to_thread(capture_a_batch, hw)
            else:
                sent = capture_a_batch(hw)
            # No flush, and flush_interval is 60 s: only the full batch sends it.
            await asyncio.wait_for(until_received(receiver, 2), timeout=20)
        return sent, hw.stats()

    sent, stats = asyncio.run(scenario())

    assert ids(receiver.messages) == sent
    assert [len(batch.batch) for batch in receiver.batches] == [2]
    assert stats.sent == 2


def test_503_with_retry_after_zero_is_retried_then_delivered(receiver: LoopbackReceiver) -> None:
    receiver.answer(503, times=2, headers={"Retry-After": "0"})

    async def scenario() -> tuple[str | None, bool, Stats]:
        async with make_client(receiver) as hw:
            sent = hw.capture("e", distinct_id="u")
            return sent, await hw.flush(timeout=10), hw.stats()

    sent, flushed, stats = asyncio.run(scenario())

    assert flushed is True
    assert statuses(receiver) == [503, 503, 200]
    assert ids(receiver.messages) == [sent]
    assert (stats.sent, stats.retried, stats.dropped, stats.last_error) == (
        1,
        2,
        0,
        f"ServerError: gateway answered 503: {SCRIPTED_BODY}",
    )


def test_400_is_final_and_its_events_go_to_on_error(receiver: LoopbackReceiver) -> None:
    errors: Errors = []
    receiver.answer(400)

    def on_error(exc: Exception, messages: list[AnyMessage]) -> None:
        errors.append((exc, messages))

    async def scenario() -> tuple[list[str | None], bool, Stats]:
        async with make_client(receiver, on_error=on_error) as hw:
            sent = [
                hw.capture(
                    "e",
                    distinct_id="u",
                    properties={"n": n},
                    timestamp=WHEN,
                    event_id=event_id(n),
                )
                for n in range(3)
            ]
            return sent, await hw.flush(timeout=5), hw.stats()

    sent, flushed, stats = asyncio.run(scenario())

    assert flushed is False  # the three were given up on
    assert sent == [event_id(0), event_id(1), event_id(2)]
    assert statuses(receiver) == [400]
    assert receiver.messages == []
    [(exc, messages)] = errors
    assert isinstance(exc, Rejected)
    assert (exc.status, str(exc)) == (400, f"gateway rejected the events (400): {SCRIPTED_BODY}")
    assert messages == [
        Track(event_id=event_id(n), event="e", distinct_id="u", timestamp=WHEN, properties={"n": n})
        for n in range(3)
    ]
    assert (stats.sent, stats.retried, stats.dropped_by_reason) == (0, 0, {"rejected": 3})
    assert (stats.given_up, stats.given_up_reason) == (
        3,
        f"rejected: Rejected: gateway rejected the events (400): {SCRIPTED_BODY}",
    )


def test_async_with_shuts_down_and_delivers(receiver: LoopbackReceiver) -> None:
    async def scenario() -> tuple[list[str | None], str | None, bool, Stats]:
        async with make_client(receiver) as hw:
            sent = [hw.capture("e", distinct_id="u", properties={"n": n}) for n in range(3)]
        after = hw.capture("late", distinct_id="u")
        return sent, after, await hw.shutdown(), hw.stats()

    sent, after, shutdown_result, stats = asyncio.run(scenario())

    assert ids(receiver.messages) == sent
    assert len(receiver.requests) == 1
    assert after is None
    assert shutdown_result is True
    assert (stats.sent, stats.queued, stats.dropped_by_reason) == (3, 0, {"shutdown": 1})


def test_shutdown_is_idempotent_and_refuses_later_events(receiver: LoopbackReceiver) -> None:
    async def scenario() -> tuple[list[bool], list[str | None], Stats]:
        hw = make_client(receiver)
        hw.capture("e", distinct_id="u")
        results = [await hw.shutdown(), await hw.shutdown()]
        later = [
            hw.track(OrderCompleted(order_id="o1", revenue_cents=1), distinct_id="u"),
            hw.capture("e", distinct_id="u"),
            hw.identify("u", {"plan": "pro"}),
            hw.alias("anon", "u"),
        ]
        results.append(await hw.shutdown())
        return results, later, hw.stats()

    results, later, stats = asyncio.run(scenario())

    assert results == [True, True, True]
    assert later == [None, None, None, None]
    assert len(receiver.requests) == 1
    assert (stats.sent, stats.dropped_by_reason, stats.last_error) == (
        1,
        {"shutdown": 4},
        "ClientClosed: the client is shut down",
    )


def test_concurrent_shutdowns_deliver_once(receiver: LoopbackReceiver) -> None:
    async def scenario() -> list[bool]:
        hw = make_client(receiver)
        hw.capture("e", distinct_id="u")
        return list(await asyncio.gather(hw.shutdown(), hw.shutdown()))

    assert asyncio.run(scenario()) == [True, True]
    assert len(receiver.messages) == 1


def test_with_debug_an_event_after_shutdown_raises(receiver: LoopbackReceiver) -> None:
    async def scenario() -> None:
        hw = make_client(receiver, debug=True)
        await hw.shutdown()
        with pytest.raises(ClientClosed, match=r"^the client is shut down$"):
            hw.capture("e", distinct_id="u")

    asyncio.run(scenario())
    assert receiver.requests == []


def test_events_captured_before_any_loop_are_delivered_by_flush(
    receiver: LoopbackReceiver,
) -> None:
    hw = make_client(receiver, max_batch_events=2)
    sent = [hw.capture("e", distinct_id="u", properties={"n": n}) for n in range(5)]
    queued_before = hw.stats().queued

    async def scenario() -> tuple[bool, bool]:
        try:
            flushed = await hw.flush(timeout=5)
        finally:
            shut_down = await hw.shutdown()
        return flushed, shut_down

    assert asyncio.run(scenario()) == (True, True)
    assert queued_before == 5
    assert [len(batch.batch) for batch in receiver.batches] == [2, 2, 1]
    assert ids(receiver.messages) == sent


def test_shutdown_delivers_events_captured_before_any_loop(receiver: LoopbackReceiver) -> None:
    hw = make_client(receiver)
    sent = hw.capture("e", distinct_id="u")

    assert asyncio.run(hw.shutdown()) is True
    assert ids(receiver.messages) == [sent]


def test_flush_with_nothing_queued_sends_nothing(receiver: LoopbackReceiver) -> None:
    async def scenario() -> tuple[bool, bool]:
        hw = make_client(receiver)
        try:
            flushed = await hw.flush(timeout=5)
        finally:
            shut_down = await hw.shutdown()
        return flushed, shut_down

    assert asyncio.run(scenario()) == (True, True)
    assert receiver.requests == []


def test_flush_after_shutdown_has_nothing_left_to_wait_for(receiver: LoopbackReceiver) -> None:
    async def scenario() -> tuple[bool, bool]:
        hw = make_client(receiver)
        hw.capture("e", distinct_id="u")
        shut_down = await hw.shutdown()
        # Everything was delivered: flush has nothing to wait for. (Without a timeout,
        # a flush that waits on the stopped task would never return.)
        return shut_down, await hw.flush(timeout=1)

    assert asyncio.run(scenario()) == (True, True)
    assert len(receiver.messages) == 1


def test_shutdown_gives_up_on_a_batch_waiting_to_be_retried(receiver: LoopbackReceiver) -> None:
    receiver.answer(503, headers={"Retry-After": "30"})

    async def scenario() -> tuple[bool, Stats]:
        hw = make_client(receiver)
        hw.capture("e", distinct_id="u")
        # Shutdown sends the batch, gets the 503 and would wait 30 s to retry: it gives up.
        return await hw.shutdown(timeout=0.2), hw.stats()

    shut_down, stats = asyncio.run(scenario())

    assert shut_down is False
    assert statuses(receiver) == [503]
    assert (stats.sent, stats.retried, stats.dropped_by_reason) == (0, 1, {"shutdown": 1})


def test_msgpack_encoding_is_delivered_and_decoded(receiver: LoopbackReceiver) -> None:
    async def scenario() -> tuple[list[str | None], bool]:
        async with make_client(receiver, encoding="msgpack") as hw:
            sent = [
                hw.track(
                    PlanChanged(plan=Plan.PRO, price=Decimal("9.90"), effective=date(2026, 12, 1)),
                    distinct_id="u",
                    timestamp=WHEN,
                ),
                hw.capture(
                    "upload",
                    distinct_id="u",
                    properties={"blob": b"\x00\x01", "ratio": 1.5, "pair": (1, 2)},
                    timestamp=WHEN,
                ),
                hw.identify("u", {"plan": "pro"}, timestamp=WHEN),
            ]
            return sent, await hw.flush(timeout=5)

    sent, flushed = asyncio.run(scenario())

    assert flushed is True
    [(_, headers, body)] = receiver.requests
    assert (headers["Content-Type"], headers["Content-Encoding"]) == ("application/msgpack", "gzip")
    assert [
        (type(m), m.event_id, m.event, m.timestamp, m.properties) for m in receiver.messages
    ] == [
        (
            Track,
            sent[0],
            "plan_changed",
            WHEN,
            {"plan": "pro", "price": "9.90", "effective": "2026-12-01"},
        ),
        (Track, sent[1], "upload", WHEN, {"blob": b"\x00\x01", "ratio": 1.5, "pair": [1, 2]}),
        (Identify, sent[2], "$identify", WHEN, {"$set": {"plan": "pro"}}),
    ]
    # A generic MessagePack decoder reads the body too: no JSON hides inside it.
    generic = msgspec.msgpack.decode(gzip.decompress(body))
    assert [m["type"] for m in generic["batch"]] == ["track", "track", "identify"]
    assert generic["lib"] == LIB
