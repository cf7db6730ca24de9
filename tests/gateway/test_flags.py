"""PostHog's feature flags through the gateway: posthog-python reads flags from it as from
PostHog. With PostHog configured the gateway asks it, under PostHog's project key, for
the same user; without, no flag is on; PostHog down answers "no flags, with errors"."""

from __future__ import annotations

from typing import Any

import httpx
import posthog

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
    path, body = asked[0]
    assert path.startswith("/flags/?v=")  # posthog-python's own version of the API
    # PostHog sees its project key, never the gateway's write key, and the same user
    assert (body["api_key"], body["distinct_id"]) == ("phc_test", "u_1")
    assert WRITE_KEY not in repr(asked)


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
        {
            "flags": {},
            "featureFlags": {},
            "featureFlagPayloads": {},
            "errorsWhileComputingFlags": False,
        },
    )


def test_posthog_down_answers_no_flags_with_errors(start_gateway: GatewayFactory) -> None:
    with posthog_standin() as ph:
        ph.status = 503
        gw = start_gateway(posthog_host=ph.url, posthog_api_key="phc_test")
        answer = httpx.post(
            gw.url + "/flags/?v=2", json={"token": WRITE_KEY, "distinct_id": "u_1"}, timeout=10
        )
    assert (answer.status_code, answer.json()["errorsWhileComputingFlags"]) == (200, True)
    assert answer.json()["flags"] == {}


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
