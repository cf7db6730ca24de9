"""`POST /v1/events` answers the same through `NativeFastPath` as through Litestar.

Every other gateway test reaches the route through the fast path (the default); this
one sends the same requests to a gateway serving the route with Litestar alone and
requires the same statuses, bodies, headers, metrics and stored rows.
"""

from __future__ import annotations

import gzip
import re
from typing import Any

import httpx
import msgspec

from .conftest import GatewayFactory, RunningGateway

AUTH = {"Authorization": "Bearer test-key"}
JSON = {**AUTH, "Content-Type": "application/json"}


def _event(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "order",
        "distinct_id": f"u{n}",
        "event_id": f"0193aaaa-0000-7000-8000-{n:012d}",
        "timestamp": "2026-11-20T10:00:00.250Z",
        "properties": {"n": n},
        **fields,
    }


def _json(*events: dict[str, Any]) -> bytes:
    return msgspec.json.encode({"batch": list(events), "sent_at": None, "lib": "test"})


REQUESTS: list[tuple[str, dict[str, str], bytes]] = [
    ("two events", JSON, _json(_event(1), _event(2))),
    ("the same again", JSON, _json(_event(1), _event(2))),
    ("one invalid", JSON, _json(_event(3), _event(4, event=""))),
    ("gzip", {**JSON, "Content-Encoding": "gzip"}, gzip.compress(_json(_event(5)))),
    (
        "msgpack",
        {**AUTH, "Content-Type": "application/msgpack"},
        msgspec.msgpack.encode({"batch": [_event(6)]}),
    ),
    ("malformed", JSON, b'{"batch": [}'),
    ("no key", {"Content-Type": "application/json"}, _json(_event(7))),
    ("unknown key", {"Authorization": "Bearer nope"}, _json(_event(7))),
    ("content type", {**AUTH, "Content-Type": "text/csv"}, b"a,b"),
    ("encoding", {**JSON, "Content-Encoding": "br"}, b"\x00"),
    ("too large", JSON, _json(*(_event(n) for n in range(10, 40)))),
    ("gzip bomb", {**JSON, "Content-Encoding": "gzip"}, gzip.compress(b" " * 100_000)),
    ("not gzip", {**JSON, "Content-Encoding": "gzip"}, b"plain"),
    ("request id", {**JSON, "X-Request-Id": "abc-123"}, _json(_event(8))),
]


def _exchange(gw: RunningGateway) -> list[tuple[str, int, Any, str, str]]:
    answers = []
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        for name, headers, body in REQUESTS:
            answer = client.post("/v1/events", content=body, headers=headers)
            rid = answer.headers["x-request-id"]
            answers.append(
                (
                    name,
                    answer.status_code,
                    answer.json(),
                    answer.headers["content-type"],
                    rid if name == "request id" else f"{len(rid)} characters",
                )
            )
    return answers


def _requests_metric(gw: RunningGateway) -> list[str]:
    text = httpx.get(f"{gw.url}/metrics").text
    return sorted(
        re.findall(r'headwater_requests_total\{route="native_events".*', text)
        + re.findall(r'headwater_request_duration_seconds_count\{route="native_events".*', text)
    )


def _stored(gw: RunningGateway) -> list[tuple[Any, ...]]:
    return gw.rows(
        "SELECT project, toString(event_id), event, distinct_id, timestamp, properties, lib,"
        " source FROM {db}.events ORDER BY event_id"
    )


def test_the_fast_path_answers_as_litestar_does(start_gateway: GatewayFactory) -> None:
    fast = start_gateway(max_batch_body_bytes=2_000)
    plain = start_gateway(max_batch_body_bytes=2_000, fast_path=False)

    answers = _exchange(fast)

    assert answers == _exchange(plain)
    assert [(name, status) for name, status, *_ in answers] == [
        ("two events", 200),
        ("the same again", 200),
        ("one invalid", 200),
        ("gzip", 200),
        ("msgpack", 200),
        ("malformed", 400),
        ("no key", 401),
        ("unknown key", 401),
        ("content type", 415),
        ("encoding", 415),
        ("too large", 413),
        ("gzip bomb", 413),
        ("not gzip", 400),
        ("request id", 200),
    ]
    assert answers[1][2] == {"accepted": 0, "duplicates": 2, "rejected": []}
    assert answers[2][2] == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [
            {
                "index": 1,
                "reason": "event is required and must be a non-empty string",
                "event_id": "0193aaaa-0000-7000-8000-000000000004",
            }
        ],
    }
    assert answers[6][2:] == ({"error": "missing write key"}, "application/json", "32 characters")
    assert answers[13][4] == "abc-123"
    assert _requests_metric(fast) == _requests_metric(plain)
    assert _requests_metric(fast) == [
        'headwater_request_duration_seconds_count{route="native_events"} 14.0',
        'headwater_requests_total{route="native_events",status="200"} 6.0',
        'headwater_requests_total{route="native_events",status="400"} 2.0',
        'headwater_requests_total{route="native_events",status="401"} 2.0',
        'headwater_requests_total{route="native_events",status="413"} 2.0',
        'headwater_requests_total{route="native_events",status="415"} 2.0',
    ]
    assert _stored(fast) == _stored(plain)
    assert [row[1][-2:] for row in _stored(fast)] == ["01", "02", "03", "05", "06", "08"]


def test_a_503_carries_retry_after_on_both_paths(start_gateway: GatewayFactory) -> None:
    answers = []
    for fast_path in (True, False):  # Redis unreachable and the gateway fails closed
        gw = start_gateway(
            redis_url="redis://127.0.0.1:1/0", redis_failure="reject", fast_path=fast_path
        )
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            answer = client.post("/v1/events", content=_json(_event(1)), headers=JSON)
            metrics = client.get("/metrics").text
        unavailable = re.findall(r"headwater_unavailable_total\{.*", metrics)
        answers.append((answer.status_code, answer.headers["retry-after"], unavailable))
    assert (
        answers == [(503, "1", ['headwater_unavailable_total{reason="DedupeUnavailable"} 1.0'])] * 2
    )
