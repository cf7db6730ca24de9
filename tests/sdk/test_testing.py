"""The helpers applications use to test their events."""

from __future__ import annotations

import pytest

from headwater.sdk import Client, ClientOptions, InvalidEvent, Track
from headwater.sdk.testing import LoopbackReceiver, RecordingClient

from .events import OrderCompleted


def test_the_fixture_records_typed_and_untyped_events(headwater_recorder: RecordingClient) -> None:
    headwater_recorder.track(OrderCompleted(order_id="o1", revenue_cents=100), distinct_id="u")
    headwater_recorder.capture("page_view", distinct_id="u", properties={"path": "/"})
    assert headwater_recorder.tracked(OrderCompleted) == [
        OrderCompleted(order_id="o1", revenue_cents=100)
    ]
    assert [m.properties for m in headwater_recorder.events("page_view")] == [{"path": "/"}]
    assert [type(m) for m in headwater_recorder.messages] == [Track, Track]
    headwater_recorder.clear()
    assert headwater_recorder.messages == []


def test_the_recorder_raises_what_a_real_client_would_refuse(
    headwater_recorder: RecordingClient,
) -> None:
    with pytest.raises(InvalidEvent, match="distinct_id must be a non-empty string"):
        headwater_recorder.capture("e", distinct_id="")


def test_the_receiver_answers_as_scripted(receiver: LoopbackReceiver) -> None:
    receiver.answer(503, times=2, headers={"Retry-After": "1"})
    hw = Client("k", host=receiver.url, options=ClientOptions(max_retry_after=0.01))
    hw.capture("e", distinct_id="u")
    assert hw.flush(timeout=10)
    hw.shutdown()
    assert [(status, headers["Authorization"]) for status, headers, _ in receiver.requests] == [
        (503, "Bearer k"),
        (503, "Bearer k"),
        (200, "Bearer k"),
    ]
