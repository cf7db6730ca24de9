"""posthog-js and analytics.js, unchanged, in a real Chromium, set up as README.md shows
and sending to the gateway from another origin.

The page comes from one loopback server and the gateway listens on another port, so the
browser applies CORS exactly as it would for a site and its analytics host. posthog-js
batches, gzips (`compression=gzip-js`, `text/plain`) and posts to `/e/` with `fetch`, or
with `navigator.sendBeacon` as a page unloads; analytics.js posts each call to
`/v1/<first letter of its type>`. The events are then read back from ClickHouse, and
posthog-js's also from a PostHog stand-in they are forwarded to. Chromium is Debian's
(`.ci/run` installs it), the SDKs come from npm at the versions
`tests/js/package-lock.json` pins (`scripts/test` installs them), and Playwright drives
the browser.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from .conftest import PROJECT, WRITE_KEY, GatewayFactory, RunningGateway, Stored, stored
from .posthog_standin import posthog_standin

JS_DIR = Path(__file__).parents[1] / "js"
POSTHOG_JS = JS_DIR / "node_modules" / "posthog-js"
ANALYTICS_JS = JS_DIR / "node_modules" / "@segment" / "analytics-next"
PAGE = b"""<!doctype html>
<html><head><title>shop</title>
<script src="/array.full.js"></script><script src="/analytics-next/index.js"></script>
</head><body><p>A site that uses posthog-js and analytics.js.</p></body></html>
"""
# The gateway's namespace for ids that are no UUIDs (analytics.js's `ajs-next-…`).
ID_NAMESPACE = uuid.UUID("6f1d1b6e-8d2c-4c55-9c43-1f0c6a1e2a10")

README = Path(__file__).parents[2] / "README.md"
# Not "HeadlessChrome", which posthog-js takes for a bot.
DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0"


def readme_js(api_host: str, write_key: str) -> tuple[str, str]:
    """README's two browser examples (posthog-js, analytics.js), pointed at `api_host`."""
    posthog, segment = re.findall(r"```js\n(.*?)```", README.read_text(), flags=re.DOTALL)
    key = json.dumps(write_key)
    posthog = posthog.replace("'<write key>'", key)
    posthog = posthog.replace("'https://events.example.com'", json.dumps(api_host))
    host = json.dumps(api_host.removeprefix("http://") + "/v1")
    segment = segment.replace("'<write key>'", key).replace("'events.example.com/v1'", host)
    return posthog, segment.replace("protocol: 'https'", "protocol: 'http'")


# posthog-js captures the page view a tick after `init`: wait for it, so that it is the
# anonymous visitor's, before the identify below.
PAGE_VIEWED = """await new Promise((viewed) => {
  posthog.on('eventCaptured', (captured) => captured.event === '$pageview' && viewed());
});"""

# After README's `posthog.init`: what a site's code then does.
ACT = """() => {
  window.requestErrors = [];
  posthog.set_config({
    on_request_error: (response) => window.requestErrors.push(response.statusCode),
  });
  const anonymous = posthog.get_distinct_id();
  const checkout = posthog.capture('checkout_started', {plan: 'pro', seats: 3});
  // what posthog-js sends as a page unloads: `navigator.sendBeacon`, `?beacon=1`
  const left = posthog.capture('left', {step: 2}, {transport: 'sendBeacon'});
  posthog.identify('u_77', {email: 'ada@example.com'});
  return {
    anonymous, uuid: checkout.uuid, beacon: left.uuid, version: posthog.version,
    url: location.href,
  };
}"""

FETCHED = "0193a0b4-0000-7000-8000-00000000f00d"

# What a page's own script can read from a JSON post: it needs the preflight answered and
# the answer's CORS headers.
FETCH = """async ([apiHost, token, uuid]) => {
  const response = await fetch(apiHost + '/i/v0/e/', {
    method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({api_key: token, event: 'fetched', distinct_id: 'u_78', uuid}),
  });
  return {status: response.status, body: await response.json()};
}"""


# After README's `AnalyticsBrowser.load`: what a site's code then does.
SEGMENT_ACT = """
  const track = await analytics.track('Clicked', {plan: 'pro'});
  const identify = await analytics.identify('u_9', {email: 'ada@example.com'});
  const page = await analytics.page();
  const calls = [track, identify, page];
  return {
    ids: calls.map((ctx) => ctx.event.messageId),
    anonymous: track.event.anonymousId,
    failed: calls.filter((ctx) => ctx.failedDelivery()).length,
    url: location.href,
  };
"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Chromium is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        # Without automation flags (`navigator.webdriver`) and, below, with a desktop user
        # agent: posthog-js drops what it takes for a bot's events.
        args = ["--no-sandbox", "--disable-blink-features=AutomationControlled"]
        launched = playwright.chromium.launch(executable_path=chromium, args=args)
        yield launched
        launched.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """A loopback web server with the page and posthog-js; yields its base URL."""
    bundle, umd = POSTHOG_JS / "dist" / "array.full.js", ANALYTICS_JS / "dist" / "umd"
    if not (bundle.exists() and umd.exists()):
        pytest.fail(f"the SDKs are missing: npm ci --prefix {JS_DIR} (scripts/test does)")
    (tmp_path / "index.html").write_bytes(PAGE)
    shutil.copy(bundle, tmp_path / "array.full.js")
    shutil.copytree(umd, tmp_path / "analytics-next")  # with the chunks it loads later
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _wait_for_events(gw: RunningGateway, count: int) -> dict[str, Stored]:
    """Poll until `count` events are stored (the test's timeout bounds the wait)."""
    while len(found := stored(gw)) < count:
        time.sleep(0.1)
    return found


def test_posthog_js_in_chromium_is_stored_with_its_fields(
    start_gateway: GatewayFactory, browser: Browser, site: str
) -> None:
    with posthog_standin() as posthog:
        gw = start_gateway(posthog_host=posthog.url, posthog_api_key="phc_test")
        setup, _ = readme_js(gw.url, WRITE_KEY)
        page = browser.new_page(user_agent=DESKTOP)
        try:
            page.goto(site + "/index.html")
            page.evaluate(f"async () => {{ {setup}; {PAGE_VIEWED} }}")
            sent = page.evaluate(ACT)
            rows = _wait_for_events(gw, 4)  # posthog-js flushes its batch every 3 s
            fetched = page.evaluate(FETCH, [gw.url, WRITE_KEY, FETCHED])
            errors = page.evaluate("window.requestErrors")
        finally:
            page.close()
        forwarded = {event["uuid"]: event for event in posthog.wait_for(5)}
        stored_now = stored(gw)
        flag_requests = list(posthog.flag_requests)

    version = json.loads((POSTHOG_JS / "package.json").read_text())["version"]
    assert sent["version"] == version
    assert errors == []  # every answer reached posthog-js: CORS let the browser read it
    assert fetched == {
        "status": 200,
        "body": {"status": 1, "accepted": 1, "duplicates": 0, "rejected": []},
    }
    checkout = rows[sent["uuid"]]
    assert (checkout.project, checkout.event, checkout.distinct_id) == (
        PROJECT,
        "checkout_started",
        sent["anonymous"],
    )
    assert (checkout.lib, checkout.source) == (f"web/{version}", "posthog")
    props = checkout.properties
    assert (props["plan"], props["seats"], props["$lib"], props["$lib_version"]) == (
        "pro",
        3,
        "web",
        version,
    )
    assert (props["$current_url"], props["$device_id"]) == (sent["url"], sent["anonymous"])
    left = rows[sent["beacon"]]
    assert (left.event, left.distinct_id, left.properties["step"], left.lib) == (
        "left",
        sent["anonymous"],
        2,
        f"web/{version}",
    )
    others = {row.event: row for key, row in rows.items() if key not in sent.values()}
    assert sorted(others) == ["$identify", "$pageview"]  # the page view: from `init`
    viewed = others["$pageview"]
    assert (viewed.distinct_id, viewed.properties["$current_url"], viewed.lib) == (
        sent["anonymous"],
        sent["url"],
        f"web/{version}",
    )
    identify = others["$identify"]
    assert (identify.distinct_id, identify.lib) == ("u_77", f"web/{version}")
    assert identify.properties["$set"] == {"email": "ada@example.com"}
    assert identify.properties["$anon_distinct_id"] == sent["anonymous"]
    # Forwarded to PostHog as posthog-js sent them: same ids, names, users and properties.
    # (Once in a while posthog-js sends one more event of its own after the four above;
    # it is stored, then forwarded, as any other.)
    assert {*rows, FETCHED} <= set(forwarded) <= set(stored_now)
    for key, event in forwarded.items():
        row = stored_now[key]
        assert (event["event"], event["distinct_id"], event["properties"]) == (
            row.event,
            row.distinct_id,
            row.properties,
        )
    assert forwarded[identify.event_id]["$set"] == {"email": "ada@example.com"}
    # posthog-js asked for its flags at the gateway (on `init`, and again for the user it
    # identified), and the gateway asked PostHog, under PostHog's key
    assert flag_requests
    assert {path.split("?")[0] for path, _, _ in flag_requests} == {"/flags/"}
    assert {asked["token"] for _, asked, _ in flag_requests} == {"phc_test"}
    assert {asked["distinct_id"] for _, asked, _ in flag_requests} <= {
        sent["anonymous"],
        "u_77",
    }
    assert WRITE_KEY not in repr(flag_requests)  # PostHog never sees the gateway's key


def test_analytics_js_in_chromium_is_stored_with_its_fields(
    start_gateway: GatewayFactory, browser: Browser, site: str
) -> None:
    gw = start_gateway()
    _, setup = readme_js(gw.url, WRITE_KEY)
    page = browser.new_page()
    try:
        page.goto(site + "/index.html")
        imported = "const { AnalyticsBrowser } = AnalyticsNext;"  # what `import` gives a site
        sent = page.evaluate(f"async () => {{ {imported} {setup}; {SEGMENT_ACT} }}")
    finally:
        page.close()

    assert sent["failed"] == 0  # each call delivered, its answer read (CORS)
    track, identify, viewed = (
        str(uuid.uuid5(ID_NAMESPACE, f"id:{message_id}")) for message_id in sent["ids"]
    )
    rows = _wait_for_events(gw, 3)
    version = json.loads((ANALYTICS_JS / "package.json").read_text())["version"]
    library = {"name": "analytics.js", "version": f"next-{version}"}
    where = {"path": "/index.html", "referrer": "", "search": "", "title": "shop"}
    where["url"] = sent["url"]
    assert {key: (row.event, row.distinct_id) for key, row in rows.items()} == {
        track: ("Clicked", sent["anonymous"]),
        identify: ("$identify", "u_9"),
        viewed: ("$pageview", "u_9"),
    }
    for row in rows.values():
        assert (row.project, row.lib, row.source) == (
            PROJECT,
            f"analytics.js/{library['version']}",
            "segment",
        )
        context = row.properties.pop("$context")
        assert (context["library"], context["page"]) == (library, where)
    assert rows[track].properties == {"plan": "pro"}
    assert rows[identify].properties == {"$set": {"email": "ada@example.com"}}
    assert rows[viewed].properties == where
