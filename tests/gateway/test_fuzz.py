"""Robustness: arbitrary bodies, headers and near-valid events thrown at every endpoint
never get a 5xx, never stop the gateway, and never put a wrong row in `events`.

Most generated events are valid with one or two fields made wrong, so that the examples
reach the checks, the dedupe store and ClickHouse rather than stopping at the parser; a
few bodies are arbitrary bytes, truncated, or encoded other than they claim.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from .conftest import WRITE_KEY, GatewayFactory, RunningGateway

EXAMPLES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMIT = 50_000  # body limit of the fuzzed gateways: above any example, small for bombs
BASIC = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
VALID_ID = "0193c6a2-7a1e-7cc1-8f3e-2b9d1d7e4a10"
Request = tuple[str, str, bytes, dict[str, str]]  # method, path, body, headers

# Hypothesis favours the ends of an integer range (0 comes up far more than one time in
# ten); a choice among equal options is closer to uniform.
rarely = st.sampled_from([False] * 9 + [True])

# -- values ----------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
objects = st.dictionaries(st.text(max_size=6), json_values, max_size=4)
good_names = st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s)
wild_names = (
    st.text(max_size=12)
    | st.text(alphabet="ab\x00é", min_size=198, max_size=202)  # around the limit, with NUL
    | json_values
)
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12, minutes=-30))]
)


def iso_times(
    low: datetime = datetime.min, high: datetime = datetime.max
) -> st.SearchStrategy[str]:
    """ISO 8601 date-times between `low` and `high`, with an offset or without one."""
    aware = st.datetimes(low, high, timezones=zones)
    return (aware | st.datetimes(low, high)).map(lambda d: d.isoformat())


# within the default window around the day the tests run (ten years back, 23 h ahead)
_today = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
good_times = iso_times(_today - timedelta(days=3600), _today)
wild_times = (
    iso_times()
    | st.sampled_from(["", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1899-12-31T23:59:59"])
    | st.text(max_size=25)
    | json_values
)
# A few fixed ids, so that examples send the same event again (dedupe, within and across).
good_ids = st.uuids().map(str) | st.sampled_from([VALID_ID, VALID_ID.upper(), VALID_ID[:8]])
wild_ids = st.uuids().map(lambda u: u.hex.upper()) | st.text(max_size=40) | json_values


@st.composite
def near_valid(
    draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]], wild: Mapping[str, Any]
) -> Any:
    """A valid message with up to two fields made wrong or left out; now and then not
    even an object."""
    if draw(rarely):
        return draw(json_values)
    message = dict(draw(valid))
    for field in draw(st.lists(st.sampled_from(sorted(wild)), max_size=2, unique=True)):
        if draw(st.booleans()):
            message[field] = draw(wild[field])
        else:
            message.pop(field, None)
    return message


def native_messages() -> st.SearchStrategy[Any]:
    valid = st.fixed_dictionaries(
        {
            "type": st.sampled_from(["track", "identify", "alias"]),
            "event_id": good_ids,
            "event": good_names,
            "distinct_id": good_names,
            "timestamp": good_times,
            "properties": objects,
        }
    )
    wild = {
        "type": st.text(max_size=8) | json_values,
        "event_id": wild_ids,
        "event": wild_names,
        "distinct_id": wild_names,
        "timestamp": wild_times,
        "properties": json_values,
    }
    return near_valid(valid, wild)


def posthog_messages() -> st.SearchStrategy[Any]:
    valid = st.fixed_dictionaries(
        {
            "event": good_names,
            "distinct_id": good_names | st.integers(),
            "uuid": good_ids,
            "timestamp": good_times,
            "properties": objects,
        },
        optional={"$set": objects, "offset": st.integers(0, 10**6)},
    )
    wild = {
        "event": wild_names,
        "distinct_id": wild_names,
        "uuid": wild_ids,
        "timestamp": wild_times,
        "properties": json_values,
        "offset": json_values,
        "$set": json_values,
    }
    return near_valid(valid, wild)


SEGMENT_KINDS = ["track", "identify", "page", "screen", "alias", "group"]


def segment_messages() -> st.SearchStrategy[Any]:
    valid = st.fixed_dictionaries(
        {
            "type": st.sampled_from(SEGMENT_KINDS),
            "event": good_names,
            "userId": good_names,
            "messageId": good_ids,
            "timestamp": good_times,
            "properties": objects,
        },
        optional={
            "anonymousId": good_names,
            "traits": objects,
            "name": good_names,
            "groupId": good_names,
            "previousId": good_names,
            "context": st.fixed_dictionaries(
                {"library": st.fixed_dictionaries({"name": good_names, "version": good_names})}
            ),
        },
    )
    wild = {
        "type": st.text(max_size=8) | json_values,
        "event": wild_names,
        "userId": wild_names,
        "anonymousId": wild_names,
        "messageId": wild_ids,
        "timestamp": wild_times,
        "originalTimestamp": wild_times,
        "properties": json_values,
        "traits": json_values,
        "context": json_values,
    }
    return near_valid(valid, wild)


@st.composite
def envelopes(
    draw: st.DrawFn,
    /,
    message: st.SearchStrategy[Any],
    sent_at: str,
    **optional: st.SearchStrategy[Any],
) -> dict[str, Any]:
    """`{batch: [...], <sent_at>: ..., **optional}`; now and then the batch is no list."""
    batch = draw(json_values) if draw(rarely) else draw(st.lists(message, min_size=1, max_size=5))
    fields = st.fixed_dictionaries({}, optional={sent_at: good_times | wild_times, **optional})
    return {"batch": batch, **draw(fields)}


@st.composite
def bodies(
    draw: st.DrawFn, documents: st.SearchStrategy[Any], *, msgpack: bool = False
) -> tuple[bytes, dict[str, str]]:
    """(body, headers): mostly a document as JSON (or MessagePack), maybe gzipped, said
    so in the headers; now and then arbitrary bytes, a truncated body or a wrong header."""
    fmt = draw(st.sampled_from(["json"] * 12 + ["msgpack"] * (6 if msgpack else 0) + ["bytes"]))
    document = draw(json_values) if draw(rarely) else draw(documents)
    if fmt == "bytes":
        raw = draw(st.binary(max_size=200))
    elif fmt == "msgpack":
        raw = msgspec.msgpack.encode(document)
    else:
        raw = json.dumps(document).encode()  # NaN and Infinity: not JSON, a 400
    if fmt != "bytes" and raw and draw(rarely):  # a byte that is no UTF-8, often in a string
        at = draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(min_value=0x80, max_value=0xFF))]) + raw[at + 1 :]
    headers = {"Content-Type": "application/msgpack" if fmt == "msgpack" else "application/json"}
    if draw(st.booleans()):
        raw = gzip.compress(raw)
        headers["Content-Encoding"] = "gzip"
    if draw(rarely):
        header = draw(st.sampled_from(["Content-Type", "Content-Encoding"]))
        headers[header] = draw(st.sampled_from(["", "text/plain", "image/png", "br", "gzip"]))
    if draw(rarely):
        raw = raw[: draw(st.integers(min_value=0, max_value=len(raw)))]  # cut on the way
    return raw, headers


# -- the requests, one strategy per endpoint family ------------------------------------------


@st.composite
def native_requests(draw: st.DrawFn) -> Request:
    documents = envelopes(native_messages(), "sent_at", lib=good_names | json_values)
    body, headers = draw(bodies(documents, msgpack=True))
    auth = draw(st.sampled_from([f"Bearer {WRITE_KEY}"] * 12 + ["Bearer nope", BASIC, ""]))
    return "POST", "/v1/events", body, {**headers, "Authorization": auth}


POSTHOG_PATHS = ["/e/", "/i/v0/e/", "/capture/", "/track/", "/batch/", "/batch", "/e"]


@st.composite
def posthog_documents(draw: st.DrawFn) -> Any:
    """A batch, one event or a list of events; the key where PostHog SDKs put it."""
    messages = posthog_messages()
    keys = st.sampled_from([WRITE_KEY] * 12 + ["nope", "", 5, None])
    shape = draw(st.sampled_from(["batch", "batch", "event", "list"]))
    if shape == "batch":
        return {**draw(envelopes(messages, "sent_at")), "api_key": draw(keys)}
    if shape == "list":
        return draw(st.lists(messages, max_size=4))
    event = draw(messages)
    if isinstance(event, dict):
        event["api_key"] = draw(keys)
    return event


@st.composite
def posthog_requests(draw: st.DrawFn) -> Request:
    path = draw(st.sampled_from(POSTHOG_PATHS))
    style = draw(st.sampled_from(["body", "body", "form", "query", "base64", "compressed"]))
    if style == "body":
        body, headers = draw(bodies(posthog_documents()))
        return "POST", path, body, headers
    text = json.dumps(draw(posthog_documents())).encode()
    if style == "base64":
        return "POST", path, base64.b64encode(text), {"Content-Type": "text/plain"}
    compression = draw(st.sampled_from(["", "gzip", "gzip-js", "base64", "lz64"]))
    data = {"": text, "base64": base64.b64encode(text), "lz64": text}.get(compression)
    data = gzip.compress(text) if data is None else data
    if style == "compressed":
        return "POST", f"{path}?compression={compression}", data, {}
    fields = {"data": data.decode("latin-1"), "compression": compression}
    if style == "form":
        form = urlencode(fields).encode()
        return "POST", path, form, {"Content-Type": "application/x-www-form-urlencoded"}
    return "GET", f"{path}?{urlencode(fields)}", b"", {}


@st.composite
def segment_requests(draw: st.DrawFn) -> Request:
    kind = draw(st.sampled_from(["batch", "batch", *SEGMENT_KINDS]))
    keys = st.sampled_from([WRITE_KEY, "nope", 5, None])
    if kind == "batch":
        documents = envelopes(segment_messages(), "sentAt", writeKey=keys)
    else:
        documents = segment_messages()
    body, headers = draw(bodies(documents))
    auth = draw(st.sampled_from([BASIC] * 12 + ["Basic bm9wZTo=", "Basic !!", "Bearer x", ""]))
    path = draw(st.sampled_from([kind, kind[0]]))  # analytics.js posts to `/v1/t`, `/v1/b`
    return "POST", f"/v1/{path}", body, {**headers, "Authorization": auth}


# -- what every answer and every stored row must be ----------------------------------------


def check_answer(response: httpx.Response, statuses: Counter[int]) -> None:
    statuses[response.status_code] += 1
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str)


class _Messages(msgspec.Struct):
    batch: list[msgspec.Raw]


def _decoded(body: bytes, headers: dict[str, str]) -> Any:
    """What the gateway read from a body it took."""
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    if "msgpack" in headers.get("Content-Type", ""):  # messages left whole, as the gateway
        return {"batch": msgspec.msgpack.decode(body, type=_Messages).batch}  # reads them first
    return json.loads(body.decode("utf-8", "replace"))  # a byte that is no UTF-8: in a string


def check_rows(gw: RunningGateway) -> int:
    """The gateway still answers, and every stored row would pass validation (its time in
    the default window); the count."""
    assert httpx.get(gw.url + "/healthz").json() == {"status": "ok"}
    rows = gw.rows(
        "SELECT event, distinct_id, properties,"
        " timestamp <= received_at + INTERVAL 23 HOUR,"
        " timestamp >= received_at - INTERVAL 3650 DAY AND timestamp >= '1900-01-01'"
        " FROM {db}.events"
    )
    for event, distinct_id, properties, not_far_ahead, not_too_old in rows:
        assert 0 < len(event) <= 200, event
        assert 0 < len(distinct_id) <= 200, distinct_id
        assert "\x00" not in event + distinct_id
        assert isinstance(json.loads(properties), dict)
        assert (not_far_ahead, not_too_old) == (1, 1)
    return len(rows)


def fuzz(
    gw: RunningGateway,
    requests: st.SearchStrategy[Request],
    *examples: Request,
    on_ok: Callable[[Request, dict[str, Any]], None] = lambda request, answer: None,
) -> Counter[int]:
    """Send `examples` and then generated requests; every answer checked. The statuses."""
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=gw.url, timeout=30) as client:

        def check(request: Request) -> None:
            method, path, body, headers = request
            response = client.request(method, path, content=body, headers=headers)
            check_answer(response, statuses)
            if response.status_code == 200:
                on_ok(request, response.json())

        for one in examples:
            check = example(request=one)(check)
        EXAMPLES(given(request=requests)(check))()
    return statuses


def _valid_native() -> Request:
    message = {"type": "track", "event": "e", "distinct_id": "u", "event_id": VALID_ID}
    body = json.dumps({"batch": [message, message]}).encode()
    return "POST", "/v1/events", body, {"Authorization": f"Bearer {WRITE_KEY}"}


def test_the_native_endpoint_answers_anything_without_a_server_error(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway(max_batch_body_bytes=LIMIT, max_event_bytes=2_000)

    def every_event_answered(request: Request, answer: dict[str, Any]) -> None:
        _, _, body, headers = request
        batch = _decoded(body, headers)["batch"]
        told = answer["accepted"] + answer["duplicates"] + len(answer["rejected"])
        assert told == len(batch)
        indices = [r["index"] for r in answer["rejected"]]
        assert indices == sorted(set(indices))
        assert all(0 <= index < len(batch) for index in indices)

    statuses = fuzz(gw, native_requests(), _valid_native(), on_ok=every_event_answered)
    assert statuses[200] > 0
    assert check_rows(gw) > 0


def test_the_posthog_endpoints_answer_anything_without_a_server_error(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway(max_batch_body_bytes=LIMIT, max_event_bytes=2_000)
    valid = {"api_key": WRITE_KEY, "event": "e", "distinct_id": "u", "uuid": VALID_ID}
    statuses = fuzz(gw, posthog_requests(), ("POST", "/e/", json.dumps(valid).encode(), {}))
    assert statuses[200] > 0
    assert check_rows(gw) > 0


def test_the_segment_endpoints_answer_anything_without_a_server_error(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway(max_batch_body_bytes=LIMIT, max_single_body_bytes=LIMIT)
    valid = {"type": "track", "event": "e", "userId": "u", "messageId": VALID_ID}
    body = json.dumps({"batch": [valid]}).encode()
    statuses = fuzz(gw, segment_requests(), ("POST", "/v1/batch", body, {"Authorization": BASIC}))
    assert statuses[200] > 0
    assert check_rows(gw) > 0


@st.composite
def arbitrary_requests(draw: st.DrawFn) -> Request:
    """Any bytes with any headers, at any ingestion route; sometimes a gzip bomb."""
    path = draw(st.sampled_from(["/v1/events", "/v1/batch", "/v1/track", *POSTHOG_PATHS]))
    body = draw(st.binary(max_size=LIMIT // 5) | st.just(gzip.compress(b"{" * (LIMIT * 3))))
    printable = st.characters(min_codepoint=32, max_codepoint=126)
    names = st.sampled_from(["Content-Type", "Content-Encoding", "Authorization"])
    values = st.text(alphabet=printable, max_size=30).map(str.strip)  # what HTTP can carry
    return "POST", path, body, draw(st.dictionaries(names, values))


def test_arbitrary_bytes_get_a_4xx_at_worst(start_gateway: GatewayFactory) -> None:
    gw = start_gateway(max_batch_body_bytes=LIMIT, max_single_body_bytes=LIMIT // 10)
    fuzz(gw, arbitrary_requests())
    check_rows(gw)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        pytest.param("/v1/events", {"Authorization": f"Bearer {WRITE_KEY}"}, id="native"),
        pytest.param("/batch/", {}, id="posthog"),
        pytest.param("/v1/batch", {"Authorization": BASIC}, id="segment"),
    ],
)
def test_a_deeply_nested_body_is_a_400(
    start_gateway: GatewayFactory, path: str, headers: dict[str, str]
) -> None:
    """Nesting that the parser's recursion limit refuses (thousands deep: a few KB)."""
    gw = start_gateway()
    message = {"type": "track", "event": "e", "distinct_id": "u", "userId": "u"}
    head = json.dumps({"api_key": WRITE_KEY, "batch": [{**message, "properties": {}}]})
    body = head.replace("{}", '{"a": ' + "[" * 5000 + "]" * 5000 + "}").encode()
    response = httpx.post(gw.url + path, content=body, headers=headers, timeout=30)
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["error"], str)
    assert check_rows(gw) == 0


# -- schemathesis over the OpenAPI document ------------------------------------------------


def test_nesting_around_the_decoders_limit_is_never_a_server_error(
    start_gateway: GatewayFactory,
) -> None:
    """An event without an id has its text cut out of the body again, deeper in the stack
    than the first read: nesting just under the first read's limit must not break it."""
    gw = start_gateway()
    statuses = set()
    for depth in range(960, 1020, 3):
        nested = b"[" * depth + b"]" * depth
        body = b'{"batch": [{"type": "track", "event": "e", "distinct_id": "u",'
        body += b' "properties": {"a": ' + nested + b"}}]}"
        response = httpx.post(
            gw.url + "/v1/events", content=body, headers={"Authorization": f"Bearer {WRITE_KEY}"}
        )
        statuses.add(response.status_code)
    assert statuses <= {200, 400}, statuses
    assert statuses == {200, 400}  # the sweep crosses the limit


def test_the_openapi_operations_never_answer_a_server_error(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    schema = schemathesis.openapi.from_url(gw.url + "/schema/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the document is valid OpenAPI
        operations.append(result.ok())
    # native, PostHog capture (5 paths) and flags (2), GET and POST each, Segment (7, and
    # analytics.js's 7 short), probes
    assert len(operations) == 1 + 5 * 2 + 2 * 2 + 7 * 2 + 3
    for operation in operations:

        @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(base_url=gw.url, headers={"Authorization": f"Bearer {WRITE_KEY}"})
            case.validate_response(response, checks=[not_a_server_error])

        check()
    check_rows(gw)
