"""The thread client against a real HTTP receiver on loopback."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from headwater.sdk import (
    AnyMessage,
    BatchResult,
    Client,
    ClientOptions,
    ConfigError,
    Event,
    EventEncodingError,
    EventTooLarge,
    InvalidEvent,
    Rejected,
    Rejection,
    Response,
    ServerError,
    TransportError,
)
from headwater.sdk.testing import LoopbackReceiver, decode_body

from .events import OrderCompleted, Plan, PlanChanged

ClientFactory = Callable[..., Client]
Errors = list[tuple[Exception, list[AnyMessage]]]

CLOSED_PORT = "http://127.0.0.1:9"  # discard: nothing listens here


@pytest.fixture
def make_client(receiver: LoopbackReceiver) -> Iterator[ClientFactory]:
    """Clients pointed at the receiver (or `host=`), shut down after the test."""
    clients: list[Client] = []

    def make(
        host: str | None = None, client_kwargs: Mapping[str, Any] = {}, **options: Any
    ) -> Client:
        options.setdefault("flush_interval", 60.0)
        client = Client(
            "test-key", host=host or receiver.url, options=ClientOptions(**options), **client_kwargs
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.shutdown(timeout=5)


def ids(messages: list[AnyMessage]) -> list[str]:
    return [m.event_id for m in messages]


def test_each_call_arrives_with_its_fields(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    hw = make_client()
    when = datetime(2026, 11, 25, 10, 0, 0, 900000, tzinfo=UTC)
    order = OrderCompleted(order_id="o1", revenue_cents=1299)
    tracked = hw.track(order, distinct_id="u_42", timestamp=when)
    captured = hw.capture("page_view", distinct_id="u_42", properties={"path": "/"}, timestamp=when)
    identified = hw.identify("u_42", {"plan": "pro"}, set_once={"first": "x"}, timestamp=when)
    aliased = hw.alias(
        "anon-1", "u_42", timestamp=when, event_id="0193aaaa-0000-7000-8000-000000000001"
    )

    assert hw.flush(timeout=5)
    assert [
        (type(m).__name__, m.event, m.distinct_id, m.timestamp, m.properties)
        for m in receiver.messages
    ] == [
        (
            "Track",
            "order_completed",
            "u_42",
            when,
            {"order_id": "o1", "revenue_cents": 1299, "coupon": None},
        ),
        ("Track", "page_view", "u_42", when, {"path": "/"}),
        (
            "Identify",
            "$identify",
            "u_42",
            when,
            {"$set": {"plan": "pro"}, "$set_once": {"first": "x"}},
        ),
        ("Alias", "$create_alias", "anon-1", when, {"alias": "u_42"}),
    ]
    assert ids(receiver.messages) == [tracked, captured, identified, aliased]
    assert aliased == "0193aaaa-0000-7000-8000-000000000001"
    assert {uuid.UUID(i).version for i in (tracked, captured, identified)} == {7}
    assert hw.stats().sent == 4


def test_timestamps_are_sent_in_utc(make_client: ClientFactory, receiver: LoopbackReceiver) -> None:
    hw = make_client()
    paris = timezone(timedelta(hours=1))
    hw.capture("a", distinct_id="u", timestamp=datetime(2026, 11, 25, 11, 0, tzinfo=paris))
    naive = datetime(2026, 11, 25, 11, 0)  # naive: local time, as Python defines it
    hw.capture("b", distinct_id="u", timestamp=naive)
    assert hw.flush(timeout=5)
    body = gzip.decompress(receiver.requests[0][2])
    sent = json.loads(body)
    assert [m["timestamp"] for m in sent["batch"]] == [
        "2026-11-25T10:00:00Z",
        naive.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    ]
    assert sent["lib"].startswith("headwater-python/")
    assert sent["sent_at"].endswith("Z")


def test_gzip_json_body_decodes_with_the_standard_library(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    hw = make_client()
    event_id = hw.track(OrderCompleted(order_id="o9", revenue_cents=5), distinct_id="u")
    assert hw.flush(timeout=5)
    _, headers, body = receiver.requests[0]
    assert (headers["Content-Type"], headers["Content-Encoding"]) == ("application/json", "gzip")
    assert headers["Authorization"] == "Bearer test-key"
    batch = json.loads(gzip.decompress(body))["batch"]
    assert batch == [
        {
            "type": "track",
            "event_id": event_id,
            "event": "order_completed",
            "distinct_id": "u",
            "timestamp": batch[0]["timestamp"],
            "properties": {"order_id": "o9", "revenue_cents": 5, "coupon": None},
        }
    ]


def test_msgpack_body_decodes_with_a_generic_decoder(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    hw = make_client(encoding="msgpack", gzip=False)
    event_id = hw.capture("page_view", distinct_id="u", properties={"n": 1, "b": b"\x00\x01"})
    assert hw.flush(timeout=5)
    _, headers, body = receiver.requests[0]
    assert headers["Content-Type"] == "application/msgpack"
    assert "Content-Encoding" not in headers
    decoded = msgspec.msgpack.decode(body)
    assert decoded["batch"][0]["event_id"] == event_id
    assert decoded["batch"][0]["properties"] == {"n": 1, "b": b"\x00\x01"}


def test_rich_python_values_are_encoded_faithfully(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    @dataclasses.dataclass
    class Cart:
        items: int
        total: Decimal

    class Line(msgspec.Struct):
        sku: str

    hw = make_client()
    item = uuid.UUID("12345678-1234-5678-1234-567812345678")
    hw.track(
        PlanChanged(plan=Plan.PRO, price=Decimal("9.90"), effective=date(2026, 12, 1)),
        distinct_id="u",
    )
    hw.capture(
        "cart",
        distinct_id="u",
        properties={
            "cart": Cart(2, Decimal("10.10")),
            "line": Line("a"),
            "item": item,
            "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "tags": ("x", "y"),
        },
    )
    assert hw.flush(timeout=5)
    assert [m.properties for m in receiver.messages] == [
        {"plan": "pro", "price": "9.90", "effective": "2026-12-01"},
        {
            "cart": {"items": 2, "total": "10.10"},
            "line": {"sku": "a"},
            "item": "12345678-1234-5678-1234-567812345678",
            "at": "2026-01-02T03:04:05Z",
            "tags": ["x", "y"],
        },
    ]


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({"price": float("nan")}, "properties.price is nan, which JSON cannot carry"),
        ({"a": [1, {"b": float("inf")}]}, "properties.a[1].b is inf, which JSON cannot carry"),
        ({"when": object()}, "properties.when has type object, which has no wire representation"),
    ],
)
def test_values_json_cannot_carry_are_refused_not_nulled(
    make_client: ClientFactory, properties: dict[str, Any], message: str
) -> None:
    hw = make_client(client_kwargs={"debug": True})
    with pytest.raises(EventEncodingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        hw.capture("bad", distinct_id="u", properties=properties)
    quiet = make_client()
    assert quiet.capture("bad", distinct_id="u", properties=properties) is None
    assert quiet.stats().dropped_by_reason == {"invalid": 1}


@pytest.mark.parametrize(
    ("distinct_id", "event", "message"),
    [
        ("", "e", "distinct_id must be a non-empty string, got ''"),
        (42, "e", "distinct_id must be a non-empty string, got 42"),
        ("u" * 201, "e", "distinct_id is 201 characters, over 200"),
        ("a\x00b", "e", "distinct_id contains a NUL character"),
        ("u", "", "event must be a non-empty string, got ''"),
        ("u", "e" * 201, "event is 201 characters, over 200"),
    ],
)
def test_invalid_envelopes_are_named(
    make_client: ClientFactory, distinct_id: Any, event: str, message: str
) -> None:
    hw = make_client(client_kwargs={"debug": True})
    with pytest.raises(InvalidEvent) as raised:
        hw.capture(event, distinct_id=distinct_id)
    assert str(raised.value) == message


def test_oversized_event_is_refused_with_its_size(make_client: ClientFactory) -> None:
    hw = make_client(max_event_bytes=200, client_kwargs={"debug": True})
    with pytest.raises(
        EventTooLarge, match=r"event 'big' is \d+ bytes encoded, over max_event_bytes=200"
    ):
        hw.capture("big", distinct_id="u", properties={"blob": "x" * 300})
    assert hw.capture("small", distinct_id="u") is not None


def test_full_batches_leave_without_waiting_for_the_interval(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    hw = make_client(max_batch_events=3)
    sent = [hw.capture("e", distinct_id="u", properties={"n": n}) for n in range(7)]
    assert hw.flush(timeout=5)
    assert [len(b.batch) for b in receiver.batches] == [3, 3, 1]
    assert ids(receiver.messages) == sent


def test_batches_are_bounded_by_bytes(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    hw = make_client(max_batch_bytes=1000, max_event_bytes=1000)
    for n in range(6):
        hw.capture("e", distinct_id="u", properties={"pad": "x" * 250, "n": n})
    assert hw.flush(timeout=5)
    assert [len(b.batch) for b in receiver.batches] == [2, 2, 2]


def test_retries_503_with_retry_after_then_delivers(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    receiver.answer(503, times=2, headers={"Retry-After": "0"})
    hw = make_client()
    event_id = hw.capture("e", distinct_id="u")
    assert hw.flush(timeout=10)
    assert [status for status, _, _ in receiver.requests] == [503, 503, 200]
    assert ids(receiver.messages) == [event_id]
    stats = hw.stats()
    assert (stats.sent, stats.retried, stats.dropped) == (1, 2, 0)


@pytest.mark.parametrize("status", [408, 429, 500, 502])
def test_retryable_statuses_are_retried(
    make_client: ClientFactory, receiver: LoopbackReceiver, status: int
) -> None:
    receiver.answer(status, headers={"Retry-After": "0"})
    hw = make_client(backoff_base=0.001)
    hw.capture("e", distinct_id="u")
    assert hw.flush(timeout=10)
    assert [s for s, _, _ in receiver.requests] == [status, 200]


@pytest.mark.parametrize("status", [400, 401, 422])  # 413: test_split.py
def test_client_errors_are_final_and_reported(
    make_client: ClientFactory, receiver: LoopbackReceiver, status: int
) -> None:
    errors: Errors = []
    receiver.answer(status)
    hw = make_client(client_kwargs={"on_error": lambda exc, msgs: errors.append((exc, msgs))})
    sent = [hw.capture("e", distinct_id="u", properties={"n": n}) for n in range(3)]
    assert hw.flush(timeout=5) is False  # the three were given up on
    assert [s for s, _, _ in receiver.requests] == [status]
    assert [(type(e), e.status, ids(msgs)) for e, msgs in errors] == [(Rejected, status, sent)]  # type: ignore[attr-defined]
    stats = hw.stats()
    assert (stats.dropped_by_reason, stats.given_up) == ({"rejected": 3}, 3)
    assert stats.given_up_reason == (
        f'rejected: Rejected: gateway rejected the events ({status}): {{"error":"scripted"}}'
    )
    assert hw.flush(timeout=5) is True  # nothing given up on since the previous flush


def test_network_errors_are_retried_then_given_up(make_client: ClientFactory) -> None:
    errors: Errors = []
    hw = make_client(
        host=CLOSED_PORT,
        max_retries=2,
        backoff_base=0.001,
        client_kwargs={"on_error": lambda exc, msgs: errors.append((exc, msgs))},
    )
    event_id = hw.capture("e", distinct_id="u")
    assert hw.flush(timeout=10) is False
    assert [(type(e), ids(msgs)) for e, msgs in errors] == [(TransportError, [event_id])]
    stats = hw.stats()
    assert (stats.retried, stats.dropped_by_reason) == (2, {"retries_exhausted": 1})
    assert stats.given_up == 1
    assert stats.given_up_reason is not None
    assert stats.given_up_reason.startswith(
        "retries_exhausted: TransportError: POST http://127.0.0.1:9/v1/events failed"
    )
    assert stats.last_error is not None
    assert stats.last_error.startswith("TransportError: POST http://127.0.0.1:9/v1/events failed")


def test_a_failing_batch_does_not_stall_the_ones_behind_it(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    receiver.answer(500, times=3)
    hw = make_client(max_retries=2, backoff_base=0.001, max_batch_events=2)
    sent = [hw.capture("e", distinct_id="u", properties={"n": n}) for n in range(4)]
    assert hw.flush(timeout=10) is False
    assert ids(receiver.messages) == sent[2:]
    assert hw.stats().dropped_by_reason == {"retries_exhausted": 2}


class PartialTransport:
    """An in-process transport answering like a gateway that refused event #1."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        batch = decode_body(body, headers)
        result = BatchResult(
            accepted=len(batch.batch) - 2,
            duplicates=1,
            rejected=[Rejection(index=1, reason="properties.revenue_cents: expected int")],
        )
        return Response(200, {}, msgspec.json.encode(result))

    def close(self) -> None:
        return None


def test_events_rejected_one_by_one_are_reported() -> None:
    errors: Errors = []
    hw = Client(
        "k",
        transport=PartialTransport(),
        options=ClientOptions(flush_interval=60),
        on_error=lambda exc, msgs: errors.append((exc, msgs)),
    )
    sent = [hw.capture("e", distinct_id="u", properties={"n": n}) for n in range(3)]
    assert hw.flush(timeout=5) is False  # one of the three was refused for good
    hw.shutdown()
    assert [(str(e), ids(msgs)) for e, msgs in errors] == [
        (
            "gateway rejected the events (200): 1 of 3 events: #1: properties.revenue_cents: "
            "expected int",
            [sent[1]],
        )
    ]
    stats = hw.stats()
    assert (stats.sent, stats.duplicates, stats.dropped_by_reason) == (2, 1, {"rejected": 1})


def test_drop_newest_keeps_the_first_events(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    hw = make_client(max_queue_events=3, max_batch_events=10)
    sent = [hw.capture("e", distinct_id="u", properties={"n": n}) for n in range(5)]
    assert sent[3:] == [None, None]
    assert hw.stats().dropped_by_reason == {"queue_full": 2}
    # The two refused calls returned None: the caller knows, and they were never accepted.
    assert hw.flush(timeout=5) is True
    assert ids(receiver.messages) == sent[:3]
    assert hw.stats().given_up == 0


def test_drop_oldest_keeps_the_last_events(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    hw = make_client(max_queue_events=3, max_batch_events=10, on_full="drop_oldest")
    sent = [hw.capture("e", distinct_id="u", properties={"n": n}) for n in range(5)]
    assert None not in sent
    stats = hw.stats()
    assert stats.dropped_by_reason == {"queue_full": 2}
    # The two evicted events had their ids returned: they were accepted, then given up on.
    assert (stats.given_up, stats.given_up_reason) == (
        2,
        "queue_full: evicted for newer events (on_full='drop_oldest')",
    )
    assert hw.flush(timeout=5) is False
    assert ids(receiver.messages) == sent[2:]


def test_block_gives_up_after_its_timeout(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    hw = make_client(max_queue_events=2, max_batch_events=10, on_full="block", block_timeout=0.05)
    sent = [hw.capture("e", distinct_id="u", properties={"n": n}) for n in range(3)]
    assert sent[2] is None
    assert hw.stats().dropped_by_reason == {"queue_full": 1}


def test_the_queue_is_bounded_by_bytes(make_client: ClientFactory) -> None:
    size = 362  # one event below, encoded: properties plus id, timestamp and envelope
    bound = 4 * size + 100
    hw = make_client(
        max_queue_bytes=bound, max_batch_bytes=bound, max_event_bytes=bound, max_batch_events=100
    )
    accepted = [hw.capture("e", distinct_id="u", properties={"pad": "x" * 200}) for _ in range(6)]
    stats = hw.stats()
    assert accepted.count(None) == 2
    assert (stats.queued, stats.queued_bytes) == (4, 4 * size)
    assert stats.dropped_by_reason == {"queue_full": 2}


def test_before_send_can_change_or_drop(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    def before_send(message: AnyMessage) -> AnyMessage | None:
        if message.event == "secret":
            return None
        message.properties["env"] = "test"
        return message

    hw = make_client(client_kwargs={"before_send": before_send})
    kept = hw.capture("e", distinct_id="u", properties={"a": 1})
    assert hw.capture("secret", distinct_id="u") is None
    assert hw.flush(timeout=5) is True  # a filtered event was never accepted
    assert [(m.event_id, m.properties) for m in receiver.messages] == [
        (kept, {"a": 1, "env": "test"})
    ]
    assert hw.stats().filtered == 1


def test_disabled_client_sends_nothing(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    hw = make_client(client_kwargs={"disabled": True})
    assert hw.capture("e", distinct_id="u") is None
    assert hw.flush(timeout=1)
    assert receiver.requests == []
    assert hw.stats().dropped_by_reason == {"disabled": 1}


def test_sync_mode_sends_before_returning(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    hw = make_client(client_kwargs={"sync_mode": True})
    event_id = hw.capture("e", distinct_id="u")
    assert ids(receiver.messages) == [event_id]


def test_shutdown_drains_refuses_and_is_idempotent(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    hw = make_client()
    sent = [hw.capture("e", distinct_id="u") for _ in range(3)]
    assert hw.shutdown(timeout=5)
    assert ids(receiver.messages) == sent
    assert hw.capture("late", distinct_id="u") is None
    assert hw.shutdown() is True
    assert hw.stats().dropped_by_reason == {"shutdown": 1}


def test_shutdown_timeout_counts_what_it_left_behind(make_client: ClientFactory) -> None:
    hw = make_client(host=CLOSED_PORT, max_retries=50, backoff_base=1.0, backoff_cap=1.0)
    for _ in range(3):
        hw.capture("e", distinct_id="u")
    assert hw.shutdown(timeout=0.2) is False
    assert hw.stats().dropped_by_reason == {"shutdown": 3}


def test_context_manager_delivers_on_exit(receiver: LoopbackReceiver) -> None:
    with Client("k", host=receiver.url, options=ClientOptions(flush_interval=60)) as hw:
        event_id = hw.capture("e", distinct_id="u")
    assert ids(receiver.messages) == [event_id]


def test_debug_raises_and_quiet_mode_only_counts(make_client: ClientFactory) -> None:
    loud = make_client(client_kwargs={"debug": True})
    with pytest.raises(InvalidEvent):
        loud.capture("e", distinct_id="")
    quiet = make_client()
    assert quiet.capture("e", distinct_id="") is None
    stats = quiet.stats()
    assert stats.dropped_by_reason == {"invalid": 1}
    assert stats.last_error == "InvalidEvent: distinct_id must be a non-empty string, got ''"


def test_on_error_that_raises_does_not_stop_delivery(
    make_client: ClientFactory, receiver: LoopbackReceiver
) -> None:
    def explode(exc: Exception, messages: list[AnyMessage]) -> None:
        raise RuntimeError("callback bug")

    receiver.answer(400)
    hw = make_client(client_kwargs={"on_error": explode})
    hw.capture("lost", distinct_id="u")
    assert hw.flush(timeout=5) is False
    kept = hw.capture("kept", distinct_id="u")
    assert hw.flush(timeout=5) is True
    assert ids(receiver.messages) == [kept]


def test_the_sdk_logs_on_its_own_logger_only(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    root_handlers = list(logging.getLogger().handlers)
    hw = make_client()
    with caplog.at_level(logging.WARNING, logger="headwater.sdk"):
        for _ in range(3):  # one line, not three: an outage must not flood the log
            hw.capture("e", distinct_id="")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        (
            "headwater.sdk",
            "event not accepted: distinct_id must be a non-empty string, got '' "
            "(further refusals counted in stats())",
        )
    ]
    assert hw.stats().dropped_by_reason == {"invalid": 3}
    assert logging.getLogger().handlers == root_handlers
    # No handler of its own either, not even a NullHandler: without any logging set up,
    # Python's last-resort handler shows the SDK's warnings on stderr (a refused write
    # key must not go unseen); tests/sdk/test_refused_key.py checks that in a child.
    assert logging.getLogger("headwater.sdk").handlers == []


def test_server_error_carries_status_and_retry_after() -> None:
    error = ServerError(503, "busy", retry_after=2.0)
    assert (str(error), error.status, error.retry_after) == ("gateway answered 503: busy", 503, 2.0)


class Measured(Event):
    label: str
    value: float
    parts: list[float] = msgspec.field(default_factory=list)


class Labelled(Event):
    label: str | None


def test_typed_events_with_floats_are_checked_for_nan(make_client: ClientFactory) -> None:
    hw = make_client(client_kwargs={"debug": True})
    with pytest.raises(EventEncodingError, match=r"properties\.parts\[1\] is inf"):
        hw.track(Measured(label="m", value=1.5, parts=[0.5, float("inf")]), distinct_id="u")
    assert hw.track(Labelled(label=None), distinct_id="u") is not None
    assert hw.track(Measured(label="m", value=2.5), distinct_id="u") is not None


def test_flush_after_shutdown_returns_at_once(make_client: ClientFactory) -> None:
    hw = make_client()
    hw.capture("e", distinct_id="u")
    assert hw.shutdown(timeout=5)
    assert hw.flush() is True


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"flush_interval": 0}, "flush_interval must be positive, got 0"),
        ({"max_retries": -1}, "max_retries must not be negative, got -1"),
        ({"encoding": "xml"}, "encoding must be 'json' or 'msgpack', got 'xml'"),
        ({"on_full": "explode"}, "on_full must be 'drop_newest', 'drop_oldest' or 'block'"),
        ({"host": "localhost:8000"}, "host must be an http(s) URL, got 'localhost:8000'"),
        ({"max_event_bytes": 10, "max_batch_bytes": 5}, "max_event_bytes must not exceed"),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        ClientOptions(**options)


def test_clients_refuse_impossible_setups(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="write_key is empty"):
        Client("")
    taken = tmp_path / "a-file"
    taken.write_text("")
    with pytest.raises(ConfigError) as unusable:
        Client("k", options=ClientOptions(spool_dir=taken))
    assert (
        str(unusable.value)
        == f"spool_dir {str(taken)!r} cannot be used: [Errno 17] File exists: {str(taken)!r}"
    )
    with pytest.raises(ConfigError, match="sync_mode sends at once and keeps no spool"):
        Client("k", sync_mode=True, options=ClientOptions(spool_dir=tmp_path))
