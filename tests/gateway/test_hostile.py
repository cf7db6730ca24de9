"""Hostile input, listed: what the gateway does with each thing a careless or malicious
sender can throw at it, on each endpoint family (native `/v1/events`, PostHog's capture
paths, Segment's tracking API), against the real gateway on loopback.

RELIABILITY.md ("Hostile input") is the audit table: every item, what the gateway does,
and the test that proves it, here or in the module that already held it.
"""

from __future__ import annotations

import base64
import gzip
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from select import select
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
import pytest

from headwater.gateway._events import MAX_BATCH_EVENTS
from headwater.gateway._http_server import HEADER_TIMEOUT_SECONDS, MAX_HEADER_BYTES, MAX_HEADERS

from ..redis_server import free_port
from .conftest import PROJECT, WRITE_KEY, GatewayFactory, RunningGateway, stored
from .posthog_standin import posthog_standin
from .raw_http import RawConnection, request_head

AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}
BASIC = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
BASIC_UNKNOWN = "Basic " + base64.b64encode(b"nope:").decode()


# -- the endpoint families, one shape of event each -----------------------------------------


@dataclass(frozen=True)
class Family:
    """How one endpoint family carries a batch: its path, its key, its message shape."""

    name: str  # as stored in `events.source`
    path: str
    headers: dict[str, str]
    message: Callable[[dict[str, Any]], dict[str, Any]]  # from a neutral event
    envelope: Callable[[list[Any]], dict[str, Any]]

    def body(self, events: list[dict[str, Any]], **envelope: Any) -> bytes:
        return json.dumps({**self.envelope([self.message(e) for e in events]), **envelope}).encode()

    def post(self, gw: RunningGateway, body: bytes, **headers: str) -> httpx.Response:
        return httpx.post(
            gw.url + self.path, content=body, headers={**self.headers, **headers}, timeout=30
        )


def _native(e: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "track",
        "event_id": e["id"],
        "event": e["name"],
        "distinct_id": e["user"],
        "properties": e["properties"],
        **e.get("extra", {}),
    }


def _posthog(e: dict[str, Any]) -> dict[str, Any]:
    return {
        "uuid": e["id"],
        "event": e["name"],
        "distinct_id": e["user"],
        "properties": e["properties"],
        **e.get("extra", {}),
    }


def _segment(e: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": e["id"],
        "event": e["name"],
        "userId": e["user"],
        "properties": e["properties"],
        **e.get("extra", {}),
    }


NATIVE = Family("native", "/v1/events", AUTH, _native, lambda batch: {"batch": batch})
POSTHOG = Family(
    "posthog", "/batch/", {}, _posthog, lambda batch: {"api_key": WRITE_KEY, "batch": batch}
)
SEGMENT = Family(
    "segment", "/v1/batch", {"Authorization": BASIC}, _segment, lambda batch: {"batch": batch}
)
FAMILIES = [pytest.param(f, id=f.name) for f in (NATIVE, POSTHOG, SEGMENT)]
# What a body-level refusal says, by family: the native parser reads a batch, the others JSON.
NOT_JSON = {
    "native": "body is not a json batch",
    "posthog": "body is not JSON",
    "segment": "body is not JSON",
}


def neutral(name: str = "e", user: str = "u", **properties: Any) -> dict[str, Any]:
    """An event in no family's shape yet, with a fresh id."""
    return {"id": str(uuid.uuid4()), "name": name, "user": user, "properties": properties}


def stored_text(gw: RunningGateway) -> dict[str, tuple[str, str, str]]:
    """event id → (event, distinct_id, properties as the column holds the text)."""
    rows = gw.rows("SELECT toString(event_id), event, distinct_id, properties FROM {db}.events")
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def count(gw: RunningGateway) -> int:
    return int(gw.rows("SELECT count() FROM {db}.events")[0][0])


# -- unknown keys -------------------------------------------------------------------------


FORGED = {  # keys no sender may set: the row's columns come from the gateway
    "project": "other",
    "source": "forged",
    "received_at": "2001-01-01T00:00:00Z",
    "inserted_at": "2001-01-01T00:00:00Z",
    "lib": "forged/1",
    "colour": "red",
    "__proto__": {"polluted": True},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_keys_are_ignored_and_never_set_a_column(
    start_gateway: GatewayFactory, family: Family
) -> None:
    gw = start_gateway()
    before = datetime.now(UTC).replace(microsecond=0)
    sent = {**neutral(plan="pro"), "extra": FORGED}
    # a second key in the envelope (Segment reads `writeKey` there) does not switch project
    envelope = {k: v for k, v in FORGED.items() if k != "lib"}  # the native envelope's own
    body = family.body([sent], **{**envelope, "writeKey": "other-key"})
    response = family.post(gw, body)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    (row,) = stored(gw).values()
    assert (row.event_id, row.project, row.source, row.lib, row.properties) == (
        sent["id"],
        PROJECT,
        family.name,
        family.name,  # no library named: the family's name
        {"plan": "pro"},
    )
    assert row.received_at >= before  # the gateway's clock, not the 2001 sent


# -- oversized bodies, and Content-Length that lies -----------------------------------------

LIMIT = 10_000


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        pytest.param("/v1/events", AUTH, id="native"),
        pytest.param("/batch/", {}, id="posthog"),
        pytest.param("/e/", {}, id="posthog-single"),
        pytest.param("/v1/batch", {"Authorization": BASIC}, id="segment"),
        pytest.param("/v1/track", {"Authorization": BASIC}, id="segment-single"),
    ],
)
def test_an_oversized_body_is_a_413_sent_declared_or_streamed(
    start_gateway: GatewayFactory, path: str, headers: dict[str, str]
) -> None:
    """Over the limit as sent (Content-Length true), as declared (a Content-Length over the
    limit and no body: answered at once, not after the body timeout), and streamed in
    chunks (no Content-Length at all)."""
    gw = start_gateway(
        max_batch_body_bytes=LIMIT, max_single_body_bytes=LIMIT, body_timeout_seconds=50
    )
    error = {"error": f"body is over the limit of {LIMIT} bytes"}
    big = b"{" + b" " * LIMIT + b"}"

    sent = httpx.post(gw.url + path, content=big, headers=headers)

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 1000

    streamed = httpx.post(gw.url + path, content=chunks(), headers=headers)
    with RawConnection(gw.url) as conn:
        conn.send(request_head(path, *headers.items(), length=10**12))
        declared = conn.response()

    assert (sent.status_code, sent.json()) == (413, error)
    assert (streamed.status_code, streamed.json()) == (413, error)
    assert (declared.status, declared.json()) == (413, error)
    assert count(gw) == 0


def test_content_length_that_lies_is_read_as_declared(start_gateway: GatewayFactory) -> None:
    """Shorter than the body: the declared bytes are the body, the rest is a next request
    the HTTP parser refuses. Longer: the body never completes, a 408 at the body timeout.
    Both lengths at once, or with chunked encoding too: the HTTP parser's 400."""
    gw = start_gateway(body_timeout_seconds=1)
    body = NATIVE.body([neutral()])
    auth = ("Authorization", f"Bearer {WRITE_KEY}")
    with RawConnection(gw.url) as conn:
        conn.send(request_head("/v1/events", auth, length=len(body) - 5) + body[:-5])
        shorter = conn.response()
        conn.send(body[-5:])  # what the sender thought was the end of its body
        after = conn.response()
        assert conn.closed_by_server()
    with RawConnection(gw.url) as conn:
        conn.send(request_head("/v1/events", auth, length=len(body) + 5) + body)
        longer = conn.response()
    smuggled = []
    for extra in [("Transfer-Encoding", "chunked"), ("Content-Length", "5")]:
        with RawConnection(gw.url) as conn:
            conn.send(request_head("/v1/events", auth, extra, length=len(body)) + body)
            smuggled.append(conn.response())

    assert (shorter.status, shorter.json()) == (
        400,
        {"error": "body is not a json batch: Input data was truncated"},
    )
    assert (after.status, after.body) == (400, b"Invalid HTTP request received.")
    assert (longer.status, longer.json()) == (408, {"error": "the body did not arrive within 1s"})
    assert [(r.status, r.body) for r in smuggled] == [(400, b"Invalid HTTP request received.")] * 2
    assert count(gw) == 0


# -- gzip bombs and forged Content-Encoding -------------------------------------------------

BOMB = gzip.compress(b" " * 5_000_000, compresslevel=9)  # ~5 KB that inflate to 5 MB
BOMB_LIMIT = 20_000  # over the bomb as a form encodes it (15 KB)
BOMB_ERROR = {"error": f"body decompresses to more than the limit of {BOMB_LIMIT} bytes"}


@pytest.mark.parametrize(
    ("path", "content", "headers"),
    [
        pytest.param("/v1/events", BOMB, {**AUTH, "Content-Encoding": "gzip"}, id="native"),
        pytest.param("/batch/", BOMB, {"Content-Encoding": "gzip"}, id="posthog-header"),
        pytest.param("/batch/?compression=gzip-js", BOMB, {}, id="posthog-query"),
        pytest.param(
            "/e/",
            urlencode({"data": BOMB, "compression": "gzip"}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
            id="posthog-form",
        ),
        pytest.param("/e/", BOMB, {"Content-Type": "text/plain"}, id="posthog-sniffed"),
        pytest.param(  # a bomb inside a gzip body: each layer is held to the limit
            "/e/", gzip.compress(BOMB), {"Content-Encoding": "gzip"}, id="posthog-double"
        ),
        pytest.param(
            "/v1/batch", BOMB, {"Authorization": BASIC, "Content-Encoding": "gzip"}, id="segment"
        ),
        pytest.param(
            "/v1/track",
            BOMB,
            {"Authorization": BASIC, "Content-Encoding": "gzip"},
            id="segment-single",
        ),
    ],
)
def test_a_gzip_bomb_is_a_413_every_way_gzip_is_taken(
    start_gateway: GatewayFactory, path: str, content: bytes, headers: dict[str, str]
) -> None:
    gw = start_gateway(max_batch_body_bytes=BOMB_LIMIT, max_single_body_bytes=BOMB_LIMIT)
    response = httpx.post(gw.url + path, content=content, headers=headers)
    assert (response.status_code, response.json()) == (413, BOMB_ERROR)
    assert count(gw) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_a_forged_content_encoding_is_refused_naming_it(
    start_gateway: GatewayFactory, family: Family
) -> None:
    gw = start_gateway()
    body = family.body([neutral()])
    answers = {
        encoding: family.post(gw, content, **{"Content-Encoding": encoding})
        for encoding, content in [
            ("br", body),
            ("deflate", body),
            ("gzip, gzip", gzip.compress(gzip.compress(body))),
            ("gzip", body),  # says gzip, is not
            ("x-gzip", b""),  # says gzip, is empty
        ]
    }
    assert {encoding: (a.status_code, a.json()) for encoding, a in answers.items()} == {
        "br": (415, {"error": "Content-Encoding 'br' is not supported (use gzip)"}),
        "deflate": (415, {"error": "Content-Encoding 'deflate' is not supported (use gzip)"}),
        "gzip, gzip": (415, {"error": "Content-Encoding 'gzip, gzip' is not supported (use gzip)"}),
        "gzip": (
            400,
            {
                "error": "body is not valid gzip: Error -3 while decompressing data:"
                " incorrect header check"
            },
        ),
        "x-gzip": (400, {"error": "body is not valid gzip: it ends before its gzip stream does"}),
    }
    # the names are read without regard to case
    accepted = family.post(
        gw, gzip.compress(family.body([neutral()])), **{"Content-Encoding": "GZIP"}
    )
    assert (accepted.status_code, accepted.json()["accepted"]) == (200, 1)
    assert count(gw) == 1


# -- deep nesting ---------------------------------------------------------------------------

DEEP = b"[" * 5000 + b"]" * 5000
TOO_DEEP = "maximum recursion depth exceeded while deserializing an object"


def _msgpack_nested() -> bytes:
    """A native MessagePack batch whose one event's properties nest 5,000 arrays deep."""
    head = msgspec.msgpack.encode(
        {"batch": [{"type": "track", "event": "e", "distinct_id": "u", "properties": {"a": 0}}]}
    )
    return head[:-1] + b"\x91" * 5000 + b"\xc0"  # the 0 replaced by [[[…[nil]…]]]


@pytest.mark.parametrize(
    ("path", "content", "headers", "error"),
    [
        pytest.param(
            "/v1/events",
            b'{"batch": [{"type": "track", "event": "e", "distinct_id": "u",'
            b' "properties": {"a": ' + DEEP + b"}}]}",
            AUTH,
            "body is not a json batch: it is nested too deeply",
            id="native-json",
        ),
        pytest.param(
            "/v1/events",
            _msgpack_nested(),
            {**AUTH, "Content-Type": "application/msgpack"},
            "body is not a msgpack batch: it is nested too deeply",
            id="native-msgpack",
        ),
        pytest.param(
            "/batch/",
            b'{"api_key": "test-key", "batch": [{"event": "e", "distinct_id": "u",'
            b' "properties": {"a": ' + DEEP + b"}}]}",
            {},
            f"body is not JSON: {TOO_DEEP}",
            id="posthog",
        ),
        pytest.param(
            "/v1/batch",
            b'{"batch": [{"type": "track", "event": "e", "userId": "u",'
            b' "properties": {"a": ' + DEEP + b"}}]}",
            {"Authorization": BASIC},
            f"body is not JSON: {TOO_DEEP}",
            id="segment",
        ),
        pytest.param(
            "/flags/?v=2",
            b'{"token": "test-key", "distinct_id": "u", "x": ' + DEEP + b"}",
            {},
            f"body is not JSON: {TOO_DEEP}",
            id="posthog-flags",
        ),
    ],
)
def test_deep_nesting_is_a_400_naming_it(
    start_gateway: GatewayFactory, path: str, content: bytes, headers: dict[str, str], error: str
) -> None:
    gw = start_gateway()
    response = httpx.post(gw.url + path, content=content, headers=headers, timeout=30)
    assert (response.status_code, response.json()) == (400, {"error": error})
    assert count(gw) == 0


# -- text that is not UTF-8, and UTF-16 surrogates ------------------------------------------

NOT_UTF8 = [  # (bytes, what Python's decoder calls the first bad byte)
    pytest.param(b"\xc0\xaf", "invalid start byte", id="overlong"),
    pytest.param(b"\xed\xa0\x80", "invalid continuation byte", id="encoded-surrogate"),
    pytest.param(b"\xe2\x82", "invalid continuation byte", id="cut-sequence"),
    pytest.param(b"\x80", "invalid start byte", id="lone-continuation"),
    pytest.param(b"\xff", "invalid start byte", id="never-utf8"),
]


@pytest.mark.parametrize(("bad", "reason"), NOT_UTF8)
@pytest.mark.parametrize("family", FAMILIES)
def test_text_that_is_not_utf8_is_refused_naming_the_byte(
    start_gateway: GatewayFactory, family: Family, bad: bytes, reason: str
) -> None:
    """Native: the event is refused by index (its neighbours are stored), the byte counted
    in the event's text. PostHog and Segment: the body, the byte counted in the body."""
    gw = start_gateway()
    good, broken = neutral(), neutral(name="@")
    body = family.body([good, broken]).replace(b'"@"', b'"' + bad + b'"')
    response = family.post(gw, body)
    if family is NATIVE:
        text = json.dumps(_native(broken)).encode().replace(b'"@"', b'"' + bad + b'"')
        problem = f"event is not UTF-8: {reason} at byte {text.index(bad)}"
        assert (response.status_code, response.json()) == (
            200,
            {
                "accepted": 1,
                "duplicates": 0,
                "rejected": [{"index": 1, "reason": problem, "event_id": broken["id"]}],
            },
        )
        assert list(stored(gw)) == [good["id"]]
    else:
        problem = f"body is not UTF-8: {reason} at byte {body.index(bad)}"
        assert (response.status_code, response.json()) == (400, {"error": problem})
        assert count(gw) == 0


@pytest.mark.parametrize(
    "escape",
    [
        pytest.param(rb"\ud800", id="lone-high"),
        pytest.param(rb"\udfff", id="lone-low"),
        pytest.param(rb"\udc00\ud800", id="reversed-pair"),
        pytest.param(rb"\ud800\u0041", id="high-then-letter"),
    ],
)
@pytest.mark.parametrize("family", FAMILIES)
def test_a_lone_surrogate_escape_is_a_400_naming_its_byte(
    start_gateway: GatewayFactory, family: Family, escape: bytes
) -> None:
    """JSON text that no UTF-8 string can hold: refused as malformed, at the byte after the
    first escape that has no partner (msgspec called a lone high one "truncated")."""
    gw = start_gateway()
    body = family.body([neutral(), neutral(note="@")]).replace(b'"@"', b'"' + escape + b'"')
    response = family.post(gw, body)
    at = body.index(escape) + (12 if escape.startswith(rb"\ud800\u") else 6)
    assert (response.status_code, response.json()) == (
        400,
        {
            "error": f"{NOT_JSON[family.name]}: JSON is malformed: invalid utf-16 surrogate"
            f" pair (byte {at})"
        },
    )
    assert count(gw) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_a_surrogate_pair_is_stored_as_its_character(
    start_gateway: GatewayFactory, family: Family
) -> None:
    gw = start_gateway()
    sent = neutral(name="@", user="@", **{"@": "@"})
    body = family.body([sent]).replace(b'"@"', rb'"\ud83d\ude00"')
    assert family.post(gw, body).json()["accepted"] == 1
    row = stored(gw)[sent["id"]]
    assert (row.event, row.distinct_id, row.properties) == ("😀", "😀", {"😀": "😀"})


# -- numbers JSON cannot hold, and duplicate keys -------------------------------------------

NUMBERS = b'{"inf":1e999,"ninf":-1e999,"tiny":1e-999,"big":123456789012345678901234567890}'


def test_native_numbers_out_of_range_are_stored_as_sent(start_gateway: GatewayFactory) -> None:
    """The native path keeps the properties' text: 1e999 and a 30-digit integer are stored
    as they were written (what reads them decides what they mean)."""
    gw = start_gateway()
    sent = neutral(n=0)
    body = NATIVE.body([sent]).replace(b'{"n": 0}', NUMBERS)
    assert NATIVE.post(gw, body).json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert stored_text(gw)[sent["id"]] == ("e", "u", NUMBERS.decode())


@pytest.mark.parametrize("family", [pytest.param(f, id=f.name) for f in (POSTHOG, SEGMENT)])
def test_posthog_and_segment_refuse_a_number_out_of_range_and_keep_huge_integers(
    start_gateway: GatewayFactory, family: Family
) -> None:
    """They decode the body: 1e999 is a 400 (the whole body); an integer past 64 bits is
    kept exactly, 1e-999 becomes 0.0."""
    gw = start_gateway()
    sent = neutral(n=0)
    out_of_range = family.post(gw, family.body([sent]).replace(b'{"n": 0}', NUMBERS))
    rounded = family.post(
        gw, family.body([sent]).replace(b'{"n": 0}', NUMBERS.replace(b"1e999", b"1"))
    )
    assert (out_of_range.status_code, out_of_range.json()) == (
        400,
        {"error": "body is not JSON: Number out of range - at `$[...][0][...][...]`"},
    )
    assert rounded.json()["accepted"] == 1
    assert stored(gw)[sent["id"]].properties == {
        "inf": 1,
        "ninf": -1,
        "tiny": 0.0,
        "big": 123456789012345678901234567890,
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_nan_and_infinity_literals_are_not_json(
    start_gateway: GatewayFactory, family: Family
) -> None:
    gw = start_gateway()
    body = family.body([neutral(n=0)]).replace(b'{"n": 0}', b'{"n": NaN, "m": Infinity}')
    response = family.post(gw, body)
    at = body.index(b"NaN")
    assert (response.status_code, response.json()) == (
        400,
        {"error": f"{NOT_JSON[family.name]}: JSON is malformed: invalid character (byte {at})"},
    )


def test_msgpack_nan_and_infinity_are_stored_as_null(start_gateway: GatewayFactory) -> None:
    """MessagePack holds them, JSON (the properties column) does not: null, as msgspec
    writes them."""
    gw = start_gateway()
    sent = _native(neutral(nan=float("nan"), inf=float("inf"), ninf=float("-inf")))
    response = NATIVE.post(
        gw, msgspec.msgpack.encode({"batch": [sent]}), **{"Content-Type": "application/msgpack"}
    )
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert stored_text(gw)[sent["event_id"]][2] == '{"nan":null,"inf":null,"ninf":null}'


@pytest.mark.parametrize("family", FAMILIES)
def test_duplicate_keys_the_last_names_the_event(
    start_gateway: GatewayFactory, family: Family
) -> None:
    """A field sent twice counts by its last value on every family. The properties: the
    native path keeps the sender's text, duplicates and all, where ClickHouse's JSON
    functions read the first; PostHog and Segment keep the last (RELIABILITY.md: open)."""
    gw = start_gateway()
    sent = neutral(name="@", n=0)
    body = family.body([sent]).replace(b'"event": "@"', b'"event": "first", "event": "last"')
    body = body.replace(b'{"n": 0}', b'{"a": 1, "a": 2}')
    assert family.post(gw, body).json()["accepted"] == 1
    (event, _, properties) = stored_text(gw)[sent["id"]]
    read = gw.rows("SELECT JSONExtractInt(properties, 'a') FROM {db}.events")
    if family is NATIVE:
        assert (event, properties, read) == ("last", '{"a": 1, "a": 2}', [(1,)])
    else:
        assert (event, json.loads(properties), read) == ("last", {"a": 2}, [(2,)])


def test_msgpack_lengths_that_lie_and_keys_json_cannot_hold(start_gateway: GatewayFactory) -> None:
    """An array, a string of 4 G elements declared in five bytes: truncated input, not an
    allocation. A binary property key: that event refused by index, naming it."""
    gw = start_gateway()
    packed = {**AUTH, "Content-Type": "application/msgpack"}
    head = b"\x81\xa5batch"  # {"batch": …
    huge_array = NATIVE.post(gw, head + b"\xdd\xff\xff\xff\xff", **packed)
    huge_string = NATIVE.post(
        gw, head + b"\x91\x82\xa4type\xa5track\xa5event\xdb\xff\xff\xff\xff", **packed
    )
    binary_key = _native(neutral())
    binary_key["properties"] = {b"k": 1}
    refused = NATIVE.post(gw, msgspec.msgpack.encode({"batch": [binary_key]}), **packed)
    truncated = {"error": "body is not a msgpack batch: Input data was truncated"}
    assert (huge_array.status_code, huge_array.json()) == (400, truncated)
    assert (huge_string.status_code, huge_string.json()) == (400, truncated)
    assert refused.json()["rejected"] == [
        {
            "index": 0,
            "reason": "Expected `str`, got `bytes` - at `key` in `$.properties`",
            "event_id": binary_key["event_id"],
        }
    ]
    assert count(gw) == 0


# -- a huge number of events in one batch --------------------------------------------------


def test_a_batch_at_the_event_limit_is_taken(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    one = neutral()
    response = NATIVE.post(gw, NATIVE.body([one] * MAX_BATCH_EVENTS))
    assert response.json() == {"accepted": 1, "duplicates": MAX_BATCH_EVENTS - 1, "rejected": []}


@pytest.mark.parametrize(
    ("path", "content", "headers"),
    [
        pytest.param("/v1/events", b'{"batch": [%s]}', AUTH, id="native-json"),
        pytest.param("/batch/", b"[%s]", {}, id="posthog"),
        pytest.param("/v1/batch", b'{"batch": [%s]}', {"Authorization": BASIC}, id="segment"),
    ],
)
def test_a_batch_over_the_event_limit_is_a_413_before_any_event_is_read(
    start_gateway: GatewayFactory, path: str, content: bytes, headers: dict[str, str]
) -> None:
    """Each `1` would be refused with a reason of its own: 10,001 reasons is no answer."""
    gw = start_gateway()
    body = content % b",".join([b"1"] * (MAX_BATCH_EVENTS + 1))
    response = httpx.post(gw.url + path, content=body, headers=headers)
    assert (response.status_code, response.json()) == (
        413,
        {"error": "batch holds 10,001 events, over the limit of 10,000"},
    )
    assert gw.rows("SELECT count() FROM {db}.ingest_errors") == [(0,)]


def test_a_msgpack_batch_over_the_event_limit_is_a_413(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    body = msgspec.msgpack.encode({"batch": [_native(neutral())] * (MAX_BATCH_EVENTS + 1)})
    response = NATIVE.post(gw, body, **{"Content-Type": "application/msgpack"})
    assert (response.status_code, response.json()) == (
        413,
        {"error": "batch holds 10,001 events, over the limit of 10,000"},
    )
    assert count(gw) == 0


# -- property keys: huge, NUL, empty --------------------------------------------------------

ODD_KEYS = {"k" * 100_000: 1, "\x00": "nul\x00inside", "": "empty key", "a.b": {"c": [None]}}


@pytest.mark.parametrize("family", FAMILIES)
def test_huge_nul_and_empty_property_keys_are_stored_as_sent(
    start_gateway: GatewayFactory, family: Family
) -> None:
    gw = start_gateway()
    sent = {**neutral(), "properties": ODD_KEYS}
    body = family.body([sent])
    assert family.post(gw, body).json()["accepted"] == 1
    (_, _, properties) = stored_text(gw)[sent["id"]]
    assert json.loads(properties) == ODD_KEYS
    if family is NATIVE:  # the sender's very text
        assert properties == json.dumps(ODD_KEYS)
    nul = gw.rows("SELECT JSONExtractString(properties, '\\0') FROM {db}.events")
    assert nul == [("nul\x00inside",)]


# -- SQL-looking strings --------------------------------------------------------------------

SQL_LIKE = [
    "'); DROP TABLE events; --",
    "' OR '1'='1",
    '"; SELECT 1; --',
    "\\",
    "\\'",
    "\\N",
    "\\0",
    "{db}",
    "{x:String}",
    "%(x)s",
    "%s%s%s%n",
    "?",
    "$1",
    "`events`",
    "a\tb\nc\r",
    "\u2028\u2029",
]


@pytest.mark.parametrize("family", FAMILIES)
def test_sql_looking_strings_are_stored_verbatim(
    start_gateway: GatewayFactory, family: Family
) -> None:
    """As event names, distinct ids, property keys and values; read back by id, exactly."""
    gw = start_gateway()
    sent = [neutral(name=s, user=s, **{s: s}) for s in SQL_LIKE]
    response = family.post(gw, family.body(sent))
    assert response.json()["accepted"] == len(SQL_LIKE), response.text
    for event in sent:
        ((name, user, properties),) = gw.rows(
            "SELECT event, distinct_id, properties FROM {db}.events WHERE event_id = {id:UUID}",
            id=event["id"],
        )
        assert (name, user, json.loads(properties)) == (
            event["name"],
            event["user"],
            event["properties"],
        )
    assert gw.rows("EXISTS TABLE {db}.events") == [(1,)]
    assert count(gw) == len(SQL_LIKE)


def test_a_refused_sql_looking_event_is_kept_verbatim(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    name = "'); DROP TABLE ingest_errors; --" * 7  # over 200 characters
    refused = _native(neutral(name=name, user="{db}"))
    text = json.dumps(refused, separators=(",", ":"))
    response = NATIVE.post(gw, b'{"batch":[' + text.encode() + b"]}")
    reason = f"event is {len(name)} characters, over 200"
    assert response.json()["rejected"] == [
        {"index": 0, "reason": reason, "event_id": refused["event_id"]}
    ]
    assert gw.rows("SELECT payload FROM {db}.ingest_errors") == [(text,)]


# -- header floods, and headers sent twice --------------------------------------------------


@pytest.mark.parametrize(
    ("path", "family"),
    [
        pytest.param("/v1/events", NATIVE, id="fast-path"),
        pytest.param("/batch/", POSTHOG, id="litestar"),
    ],
)
def test_a_flood_of_headers_is_refused_and_the_worker_goes_on(
    start_gateway: GatewayFactory, path: str, family: Family
) -> None:
    """1,000 headers: refused at the 101st (431), the connection closed; headers within
    the bounds (90 of them, one of 8 KB) change nothing in the answer; the worker serves
    the next request."""
    gw = start_gateway()
    body = family.body([neutral()])
    flood = [(f"X-Flood-{i}", "v" * 50) for i in range(1000)]
    within = [*[(f"X-Many-{i}", "v" * 50) for i in range(90)], ("X-Big", "b" * 8192)]
    with RawConnection(gw.url) as conn:
        conn.send(request_head(path, *family.headers.items(), *flood, length=len(body)) + body)
        flooded = conn.response()
    with RawConnection(gw.url) as conn:
        conn.send(request_head(path, *family.headers.items(), *within, length=len(body)) + body)
        many = conn.response()
    after = family.post(gw, family.body([neutral()]))
    assert (flooded.status, flooded.json()) == (431, {"error": "more than 100 headers"})
    assert (many.status, many.json()["accepted"]) == (200, 1)
    assert (after.status_code, after.json()["accepted"]) == (200, 1)
    assert count(gw) == 2


def test_a_header_block_over_64_kib_is_refused_before_it_is_buffered(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    body = NATIVE.body([neutral()])
    with RawConnection(gw.url) as conn:
        conn.send(
            request_head("/v1/events", *AUTH.items(), ("X-Big", "b" * 65_537), length=len(body))
            + body
        )
        answer = conn.response()
        closed = conn.closed_by_server()
    assert (answer.status, answer.json(), closed) == (
        431,
        {"error": f"request headers over {MAX_HEADER_BYTES} bytes"},
        True,
    )
    assert count(gw) == 0


def test_more_than_100_headers_are_refused(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    body = NATIVE.body([neutral()])
    many = [(f"X-H{n}", "v") for n in range(MAX_HEADERS)]
    with RawConnection(gw.url) as conn:
        conn.send(request_head("/v1/events", *AUTH.items(), *many, length=len(body)) + body)
        answer = conn.response()
    assert (answer.status, answer.json()) == (431, {"error": f"more than {MAX_HEADERS} headers"})
    assert count(gw) == 0


BEARERS = (f"Bearer {WRITE_KEY}", "Bearer nope")


@pytest.mark.parametrize(
    ("family", "keys", "fast_path"),
    [
        pytest.param(NATIVE, BEARERS, True, id="fast-path"),
        pytest.param(NATIVE, BEARERS, False, id="litestar"),
        pytest.param(SEGMENT, (BASIC, BASIC_UNKNOWN), True, id="segment"),
    ],
)
def test_an_authorization_header_sent_twice_counts_by_its_first_value(
    start_gateway: GatewayFactory, family: Family, keys: tuple[str, str], fast_path: bool
) -> None:
    """The fast path read the last, Litestar's routes the first: one answer now."""
    gw = start_gateway(fast_path=fast_path)
    path = family.path
    known, unknown = keys

    def send(*values: str) -> httpx.Response:
        headers = [("Authorization", value) for value in values]
        return httpx.post(gw.url + path, content=family.body([neutral()]), headers=headers)

    first_known, first_unknown = send(known, unknown), send(unknown, known)
    assert (first_known.status_code, first_known.json()["accepted"]) == (200, 1)
    assert (first_unknown.status_code, first_unknown.json()) == (
        401,
        {"error": "unknown write key"},
    )
    assert count(gw) == 1


# -- slowloris: a body dribbled a byte at a time --------------------------------------------


@dataclass
class Dribbler:
    """A client that sends its request one byte at a time until the server answers."""

    conn: RawConnection
    data: bytes
    sent: int = 0
    answered: threading.Event = field(default_factory=threading.Event)

    def step(self, readable: list[Any]) -> None:
        """One more byte, unless the server has answered (or closed)."""
        if self.conn.sock in readable:
            self.answered.set()
            return
        try:
            self.conn.send(self.data[self.sent : self.sent + 1])
        except OSError:  # closed between the look and the byte
            self.answered.set()
        self.sent += 1


def _dribble(clients: list[Dribbler], started: threading.Event, stop: threading.Event) -> None:
    """A byte to each client not yet answered, every 50 ms, until `stop` (bounded: 60 s)."""
    for _ in range(1200):
        waiting = [c for c in clients if not c.answered.is_set()]
        readable, _, _ = select([c.conn.sock for c in waiting], [], [], 0)
        for client in waiting:
            client.step(readable)
        started.set()
        if stop.is_set():
            return
        time.sleep(0.05)


def test_slowloris_bodies_do_not_hold_the_worker_and_are_cut_off(
    start_gateway: GatewayFactory,
) -> None:
    """Three clients dribble a body a byte every 50 ms to the one worker (native, PostHog,
    Segment), a fourth its headers; meanwhile other requests to each family are answered
    and stored, before any dribbler hears back. Each dribbled body is cut off by the body
    read deadline (HEADWATER_BODY_TIMEOUT_SECONDS) with a 408 naming it."""
    gw = start_gateway(body_timeout_seconds=4)
    promised = 100_000  # the Content-Length they declare, at 20 bytes a second

    def body_dribbler(family: Family) -> Dribbler:
        head = request_head(family.path, *family.headers.items(), length=promised)
        client = Dribbler(RawConnection(gw.url), head + b" " * promised, sent=len(head))
        client.conn.send(head)  # the head at once: the body a byte at a time
        return client

    bodies = [body_dribbler(family) for family in (NATIVE, POSTHOG, SEGMENT)]
    headers = Dribbler(RawConnection(gw.url), b"POST /v1/events HTTP/1.1\r\n" + b"X: y\r\n" * 999)
    started, stop = threading.Event(), threading.Event()
    worker = threading.Thread(target=_dribble, args=([*bodies, headers], started, stop))
    worker.start()
    try:
        assert started.wait(30)
        served = [f.post(gw, f.body([neutral()])) for f in (NATIVE, POSTHOG, SEGMENT) * 2]
        still_dribbling = [not c.answered.is_set() for c in [*bodies, headers]]
        cut_off = [client.answered.wait(30) for client in bodies]
    finally:
        stop.set()
        worker.join()
    answers = [client.conn.response() for client in bodies]
    for client in [*bodies, headers]:
        client.conn.sock.close()

    assert [(r.status_code, r.json()["accepted"]) for r in served] == [(200, 1)] * 6
    assert still_dribbling == [True] * 4
    assert cut_off == [True] * 3
    assert [(a.status, a.json()) for a in answers] == [
        (408, {"error": "the body did not arrive within 4s"})
    ] * 3
    assert count(gw) == 6


def test_a_client_that_never_finishes_its_headers_is_cut_off(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    with RawConnection(gw.url, timeout=HEADER_TIMEOUT_SECONDS + 5) as conn:
        conn.send(b"POST /v1/events HTTP/1.1\r\nHost: gateway\r\n")
        answer = conn.response()
        closed = conn.closed_by_server()
    assert (answer.status, answer.json(), closed) == (
        408,
        {"error": f"headers not received within {HEADER_TIMEOUT_SECONDS:g} s"},
        True,
    )


# -- secrets never in logs ------------------------------------------------------------------

SERVED_KEY = "wk_hostile_s3cret_key"
WRONG_KEY = "wk_hostile_wrong_guess"
POSTHOG_KEY = "phc_hostile_s3cret"
FORGED_ID = 'r1", "level": "critical", "message": "forged'


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _serve(tmp_path: Path, posthog_url: str) -> tuple[str, subprocess.Popen[bytes]]:
    """`headwater serve` as an operator starts it, logging at DEBUG (the most it logs)."""
    port = free_port()
    environment = {
        "PATH": str(Path(sys.executable).parent),
        "HEADWATER_CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
        "HEADWATER_WRITE_KEYS": f"{SERVED_KEY}:shop",
        "HEADWATER_MODEL_SCHEDULE": "false",
        "HEADWATER_POSTHOG_HOST": posthog_url,
        "HEADWATER_POSTHOG_API_KEY": POSTHOG_KEY,
    }
    command = [str(Path(sys.executable).with_name("headwater")), "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--log-level", "DEBUG"],
        env=environment,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    while process.poll() is None:  # until it answers (the test's timeout bounds the wait)
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return url, process
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"headwater serve exited with {process.returncode}")


def _requests_carrying_keys(url: str) -> list[int]:
    """A write key, right or wrong, in every place a sender puts one, on requests that
    succeed and requests that fail; the statuses."""
    event = {"event": "e", "distinct_id": "u", "properties": {"token": SERVED_KEY}}
    native = json.dumps({"batch": [{"type": "track", "event": "e", "distinct_id": "u"}]})
    segment = {"batch": [{"type": "track", "event": "e", "userId": "u"}]}
    data = _b64(json.dumps({**event, "api_key": SERVED_KEY}))
    wrong_data = _b64(json.dumps({**event, "api_key": WRONG_KEY}))
    with httpx.Client(base_url=url, timeout=30) as http:
        answers = [
            http.post(
                "/v1/events", content=native, headers={"Authorization": f"Bearer {SERVED_KEY}"}
            ),
            http.post(
                "/v1/events", content=native, headers={"Authorization": f"Bearer {WRONG_KEY}"}
            ),
            http.post(
                "/v1/events", content=b"{", headers={"Authorization": f"Bearer {SERVED_KEY}"}
            ),
            http.post(
                f"/v1/events?api_key={SERVED_KEY}&token={SERVED_KEY}",
                content=native,
                headers={"Authorization": f"Bearer {WRONG_KEY}"},
            ),
            http.post("/batch/", json={"api_key": SERVED_KEY, "batch": [event]}),
            http.post("/batch/", json={"api_key": WRONG_KEY, "batch": [event]}),
            http.post(f"/batch/?api_key={SERVED_KEY}", content=b"{"),
            http.get(f"/e/?data={data}&ver=1.0"),
            http.get(f"/e/?data={wrong_data}&ver=1.0"),
            http.post("/e/", data={"data": wrong_data}),
            http.post("/v1/batch", json=segment, auth=(SERVED_KEY, "")),
            http.post("/v1/batch", json=segment, auth=(WRONG_KEY, "")),
            http.post("/v1/batch", content=b"{", auth=(SERVED_KEY, "")),
            http.post("/v1/batch", json=segment, headers={"X-Write-Key": WRONG_KEY}),
            http.post("/v1/batch", json={**segment, "writeKey": WRONG_KEY}),
            http.post("/flags/?v=2", json={"token": SERVED_KEY, "distinct_id": "u"}),
            http.post(  # the query is passed on to PostHog, but for the keys it names
                f"/flags/?v=2&token={SERVED_KEY}&api_key={WRONG_KEY}&writeKey={SERVED_KEY}",
                json={"token": SERVED_KEY, "distinct_id": "u"},
            ),
            http.post(  # a request id that tries to write a field of its own
                "/v1/events",
                content=native,
                headers={"Authorization": f"Bearer {WRONG_KEY}", "X-Request-Id": FORGED_ID},
            ),
        ]
    with RawConnection(url) as conn:  # what the HTTP parser refuses, the key in its head
        head = request_head("/v1/events", ("Authorization", f"Bearer {SERVED_KEY}"))
        conn.send(head.replace(b"\r\n\r\n", b"\r\nContent-Length: -1\r\n\r\n"))
        refused = conn.response().status
    return [answer.status_code for answer in answers] + [refused]


def test_write_keys_never_reach_the_logs_of_headwater_serve(tmp_path: Path) -> None:
    with posthog_standin() as posthog:
        url, process = _serve(tmp_path, posthog.url)
        try:
            statuses = _requests_carrying_keys(url)
        finally:
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)

    assert process.returncode == 0
    assert statuses == [
        *(200, 401, 400, 401),  # native
        *(200, 401, 400, 200, 401, 401),  # PostHog
        *(200, 401, 400, 401, 401),  # Segment
        *(200, 200),  # flags
        *(401, 400),  # the forged request id; the HTTP parser's refusal
    ]
    logged = (out + err).decode()
    for secret in (SERVED_KEY, WRONG_KEY, POSTHOG_KEY):
        for spelling in (secret, _b64(f"{secret}:"), _b64(secret)[:-4]):
            assert spelling not in logged, spelling
    records = [json.loads(line) for line in err.decode().splitlines()]  # each line one object
    messages = {r["message"] for r in records}
    assert {
        "POST /v1/events 401",
        "POST /v1/events 400",
        "POST /batch 401",
        "GET /e 401",
        "POST /v1/batch 401",
        "Invalid HTTP request received.",
    } <= messages
    (forged,) = [r for r in records if r.get("request_id") == FORGED_ID]
    assert (forged["level"], forged["message"]) == ("info", "POST /v1/events 401")
    assert {r["level"] for r in records} <= {"debug", "info", "warning"}
