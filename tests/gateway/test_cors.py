"""Browser senders (posthog-js, analytics.js) post from other origins: the gateway answers
their preflight and echoes an allowed origin, with credentials, on every answer."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from headwater.gateway import Settings
from headwater.gateway._errors import ConfigError

from .conftest import PROJECT, WRITE_KEY, GatewayFactory

SITE = "https://shop.example.com"


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def capture(event_id: str) -> bytes:
    message = {"api_key": WRITE_KEY, "event": "viewed", "distinct_id": "u_1", "uuid": event_id}
    return json.dumps(message).encode()


def native(event_id: str) -> bytes:
    message = {"type": "track", "event": "viewed", "distinct_id": "u_1", "event_id": event_id}
    return json.dumps({"batch": [message]}).encode()


def test_a_preflight_from_any_origin_is_answered_with_that_origin(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    response = preflight(gw.url + "/e/", SITE)
    assert response.status_code == 204
    assert cors_headers(response) == {
        "access-control-allow-origin": SITE,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, OPTIONS, POST",
        # Litestar's safelisted headers, and the one asked for
        "access-control-allow-headers": (
            "Accept, Accept-Language, Content-Language, Content-Type, content-type"
        ),
        "access-control-max-age": "86400",
    }
    assert response.headers["vary"] == "Origin"


@pytest.mark.parametrize(
    ("path", "content", "expected"),
    [
        (
            "/e/?ver=1.200.0",
            "posthog",
            {"status": 1, "accepted": 1, "duplicates": 0, "rejected": []},
        ),
        ("/v1/events", "native", {"accepted": 1, "duplicates": 0, "rejected": []}),
    ],
)
def test_a_browser_post_is_stored_and_its_answer_readable(
    start_gateway: GatewayFactory, path: str, content: str, expected: dict[str, object]
) -> None:
    gw = start_gateway()
    event_id = str(uuid.uuid4())
    body = capture(event_id) if content == "posthog" else native(event_id)
    headers = {"Origin": SITE, "Authorization": f"Bearer {WRITE_KEY}"}
    response = httpx.post(gw.url + path, content=body, headers=headers)
    assert (response.status_code, response.json()) == (200, expected)
    assert response.headers["access-control-allow-origin"] == SITE
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-expose-headers"] == "Retry-After, X-Request-Id"
    assert response.headers["vary"] == "Origin"
    assert gw.rows("SELECT project, toString(event_id) FROM {db}.events") == [(PROJECT, event_id)]


def test_an_error_is_readable_too(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    response = httpx.post(
        gw.url + "/v1/events",
        content=b'{"batch": []}',
        headers={"Origin": SITE, "Authorization": "Bearer nope"},
    )
    assert response.status_code == 401
    assert response.json() == {"error": "unknown write key"}
    assert response.headers["access-control-allow-origin"] == SITE


def test_without_an_origin_no_cors_headers(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    response = httpx.post(gw.url + "/e/", content=capture(str(uuid.uuid4())))
    assert (response.status_code, cors_headers(response)) == (200, {})


@pytest.mark.parametrize("path", ["/metrics", "/readyz", "/healthz", "/schema/openapi.json"])
def test_the_operator_routes_are_not_for_browsers(start_gateway: GatewayFactory, path: str) -> None:
    """A page elsewhere cannot read them through the browser of someone who can reach the
    gateway: no CORS headers, and a preflight is not approved."""
    gw = start_gateway()
    answered = httpx.get(gw.url + path, headers={"Origin": SITE})
    assert (answered.status_code, cors_headers(answered)) == (200, {})
    assert cors_headers(preflight(gw.url + path, SITE)) == {}


def test_only_the_configured_origins(start_gateway: GatewayFactory) -> None:
    gw = start_gateway(cors_origins=f"{SITE}, https://*.example.org")
    assert preflight(gw.url + "/e/", SITE).headers["access-control-allow-origin"] == SITE
    other = "https://app.example.org"
    assert preflight(gw.url + "/e/", other).headers["access-control-allow-origin"] == other
    refused = preflight(gw.url + "/e/", "https://evil.example.net")
    assert (refused.status_code, refused.text) == (400, "Disallowed CORS Origin")
    # A simple request is still taken (the write key decides), but the browser may not
    # read its answer.
    answered = httpx.post(
        gw.url + "/e/",
        content=capture(str(uuid.uuid4())),
        headers={"Origin": "https://evil.example.net"},
    )
    assert (answered.status_code, "access-control-allow-origin" in answered.headers) == (
        200,
        False,
    )


def test_cors_can_be_switched_off(start_gateway: GatewayFactory) -> None:
    gw = start_gateway(cors_origins="")
    response = httpx.post(
        gw.url + "/e/", content=capture(str(uuid.uuid4())), headers={"Origin": SITE}
    )
    assert (response.status_code, cors_headers(response)) == (200, {})


def test_an_origin_setting_that_is_no_origin_is_refused() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings(clickhouse_url="chdb:///x", cors_origins="*, shop.example.com")
    assert str(raised.value) == (
        "HEADWATER_CORS_ORIGINS: 'shop.example.com' is not an origin like"
        " https://app.example.com (or * for any)"
    )
