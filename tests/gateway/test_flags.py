"""PostHog's feature flags through the gateway: posthog-python reads flags from it as from
PostHog. With PostHog configured the gateway asks it, under PostHog's project key, for
the same user; without, no flag is on; PostHog down answers "no flags, with errors"."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import posthog
import pytest

from .conftest import WRITE_KEY, GatewayFactory
from .posthog_standin import posthog_standin

# PostHog's /flags answer for a user with `beta` on and `checkout` on variant `test`.
FLAGS = {
    "flags": {
        "beta": {
            "key": "beta",
            "enabled": True,
            "variant": None,
            "reason": {"code": "condition_match", "condition_index": 0, "description": "Matched"},
            "metadata": {"id": 1, "version": 3, "payload": None},
        },
        "checkout": {
            "key": "checkout",
            "enabled": True,
            "variant": "test",
            "reason": {"code": "condition_match", "condition_index": 0, "description": "Matched"},
            "metadata": {"id": 2, "version": 1, "payload": '{"discount": 10}'},
        },
    },
    "errorsWhileComputingFlags": False,
    "requestId": "0f7c2c4e-5b1e-4a51-9d3e-d3c1b2a4e5f6",
}

# The gateway's own answer: every flag off, in the shapes of every SDK version.
NONE_ON: dict[str, Any] = {"flags": {}, "featureFlags": {}, "featureFlagPayloads": {}}


def answered(url: str) -> dict[str, float]:
    """`headwater_flags_requests_total` by answer, from /metrics."""
    found = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("headwater_flags_requests_total{"):
            labels, value = line.split(" ")
            found[labels.split('"')[1]] = float(value)
    return found


def client(url: str) -> posthog.Posthog:
    return posthog.Posthog(WRITE_KEY, host=url, sync_mode=True)


def test_flags_come_from_posthog_under_its_key(start_gateway: GatewayFactory) -> None:
    with posthog_standin() as ph:
        ph.flags = FLAGS
        gw = start_gateway(posthog_host=ph.url, posthog_api_key="phc_test")
        sender = client(gw.url)
        try:
            flags = sender.evaluate_flags("u_1")
            found = (
                flags.is_enabled("beta"),
                flags.get_flag("checkout"),
                flags.get_flag_payload("checkout"),
                flags.is_enabled("absent"),
                sorted(flags.keys),
            )
        finally:
            sender.shutdown()
        asked = list(ph.flag_requests)

    assert found == (True, "test", {"discount": 10}, False, ["beta", "checkout"])
    path, body, forwarded_for = asked[0]
    assert path.startswith("/flags/?v=")  # posthog-python's own version of the API
    # PostHog sees its project key, never the gateway's write key, and the same user
    assert (body["api_key"], body["distinct_id"]) == ("phc_test", "u_1")
    assert WRITE_KEY not in repr(asked)
    assert forwarded_for == "127.0.0.1"  # the user's address, for PostHog's GeoIP
    assert answered(gw.url) == {"posthog": len(asked)}


def test_without_posthog_no_flag_is_on(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    sender = client(gw.url)
    try:
        flags = sender.evaluate_flags("u_1")
        found = (flags.is_enabled("beta"), flags.keys)
    finally:
        sender.shutdown()
    assert found == (False, [])
    answer = httpx.post(
        gw.url + "/decide/?v=3", json={"token": WRITE_KEY, "distinct_id": "u_1"}, timeout=10
    )
    assert (answer.status_code, answer.json()) == (
        200,
        {**NONE_ON, "errorsWhileComputingFlags": False},
    )
    assert answered(gw.url) == {"none": 2}


def test_a_flags_request_needs_a_known_key(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    cases: list[tuple[Any, int, dict[str, str]]] = [
        ({"token": "nope", "distinct_id": "u_1"}, 401, {"error": "unknown write key"}),
        ({"distinct_id": "u_1"}, 401, {"error": "missing write key"}),
        ([1, 2], 400, {"error": "a flags request must be a JSON object"}),
    ]
    for body, status, error in cases:
        answer = httpx.post(gw.url + "/flags/?v=2", json=body, timeout=10)
        assert (answer.status_code, answer.json()) == (status, error)
    latin1 = httpx.post(gw.url + "/flags/?v=2", content=b'{"distinct_id": "\xe9"}', timeout=10)
    assert (latin1.status_code, latin1.json()) == (
        400,
        {"error": "body is not UTF-8: invalid continuation byte at byte 17"},
    )


def test_a_wrapped_flags_request_reaches_posthog_as_plain_json(
    start_gateway: GatewayFactory,
) -> None:
    """posthog-js sends its flags request as a base64 form with `?compression=base64`, and
    may name its key in the query; PostHog gets plain JSON, the query without what only
    the gateway read, and never the gateway's key."""
    asked = {"token": WRITE_KEY, "distinct_id": "u_1", "groups": {}}
    data = base64.b64encode(json.dumps(asked).encode()).decode()
    with posthog_standin() as ph:
        ph.flags = FLAGS
        gw = start_gateway(posthog_host=ph.url, posthog_api_key="phc_test")
        form = httpx.post(
            gw.url + f"/flags/?v=2&config=true&compression=base64&token={WRITE_KEY}",
            content=f"data={data}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=10,
        )
        query = httpx.get(gw.url + f"/decide/?v=3&data={data}", timeout=10)
        received = list(ph.flag_requests)
    assert [answer.status_code for answer in (form, query)] == [200, 200]
    assert form.json() == query.json() == FLAGS
    assert [path for path, _, _ in received] == ["/flags/?v=2&config=true", "/decide/?v=3"]
    assert [body for _, body, _ in received] == [{**asked, "token": "phc_test"}] * 2
    assert WRITE_KEY not in repr(received)


@pytest.mark.parametrize("trouble", ["refused", "unauthorized", "down"])
def test_posthog_failing_answers_no_flags_with_errors(
    start_gateway: GatewayFactory, trouble: str
) -> None:
    """PostHog unreachable, refusing the key, or down: the SDK keeps the flags it had."""
    with posthog_standin() as ph:
        ph.status = {"refused": 200, "unauthorized": 401, "down": 503}[trouble]
        host = "http://127.0.0.1:1" if trouble == "refused" else ph.url  # nothing on port 1
        gw = start_gateway(posthog_host=host, posthog_api_key="phc_test")
        answer = httpx.post(
            gw.url + "/flags/?v=2", json={"token": WRITE_KEY, "distinct_id": "u_1"}, timeout=10
        )
    assert (answer.status_code, answer.json()) == (
        200,
        {**NONE_ON, "errorsWhileComputingFlags": True},
    )
    assert answered(gw.url) == {"failed": 1}
