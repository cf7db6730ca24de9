"""`headwater serve` as an operator runs it: the installed command in its own process,
configured by the environment, logging JSON lines, stopped by SIGINT."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from ..chdb_elsewhere import query_elsewhere
from ..redis_server import free_port
from .posthog_standin import posthog_standin

WRITE_KEY = "wk_s3cret_write"
POSTHOG_KEY = "phc_s3cret_key"
WRONG_KEY = "wk_wrong_guess"


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    """Until /healthz answers (the test's timeout bounds the wait)."""
    while process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"headwater serve exited with {process.returncode}")


def _events(count: int) -> tuple[list[str], dict[str, Any]]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    batch = [{"type": "track", "event": "e", "distinct_id": "u", "event_id": i} for i in ids]
    return ids, {"batch": batch}


def _stored_ids(directory: Path) -> list[str]:
    """The event ids in a stopped gateway's chDB directory."""
    rows = query_elsewhere(directory, "SELECT toString(event_id) FROM headwater.events ORDER BY 1")
    return [event_id for (event_id,) in rows]


def test_serve_logs_json_lines_without_keys_and_drains_on_sigint(
    tmp_path: Path, redis_url: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    directory = tmp_path / "clickhouse"
    with posthog_standin() as posthog:
        environment = {
            "PATH": str(Path(sys.executable).parent),
            "HEADWATER_CLICKHOUSE_URL": f"chdb://{directory}",
            "HEADWATER_WRITE_KEYS": f"{WRITE_KEY}:shop",
            "HEADWATER_REDIS_URL": redis_url,
            "HEADWATER_REDIS_PREFIX": f"serve-{uuid.uuid4().hex[:8]}",
            "HEADWATER_DEDUPE_TTL_SECONDS": "60",
            "HEADWATER_MODEL_SCHEDULE": "false",
            "HEADWATER_POSTHOG_HOST": posthog.url,
            "HEADWATER_POSTHOG_API_KEY": POSTHOG_KEY,
            "HEADWATER_COMMIT_MAX_DELAY_MS": "2000",  # the last request waits in the buffer
            "HEADWATER_FORWARD_SETTLE_SECONDS": "0.2",
        }
        command = [str(Path(sys.executable).with_name("headwater")), "serve", "--port", str(port)]
        process = subprocess.Popen(
            [*command, "--workers", "2", "--log-level", "DEBUG"],
            env=environment,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_until_up(url, process)
            auth = {"Authorization": f"Bearer {WRITE_KEY}"}
            first, body = _events(2)
            native = httpx.post(
                f"{url}/v1/events", json=body, headers={**auth, "X-Request-Id": "req-native-1"}
            )
            wrong = httpx.post(
                f"{url}/v1/events", json=body, headers={"Authorization": f"Bearer {WRONG_KEY}"}
            )
            flags = httpx.post(f"{url}/flags/?v=2", json={"token": WRITE_KEY, "distinct_id": "u"})
            # inserted within 2 s of the first insert: still buffered when SIGINT comes
            last, body = _events(1)
            answers: list[httpx.Response] = []
            sender = threading.Thread(
                target=lambda: answers.append(
                    httpx.post(f"{url}/v1/events", json=body, headers=auth, timeout=30)
                )
            )
            sender.start()
            time.sleep(0.5)
            process.send_signal(signal.SIGINT)
            sender.join()
        finally:
            if process.poll() is None and not answers:  # failed before its SIGINT
                process.send_signal(signal.SIGINT)  # (a second one would force an exit)
            out, err = process.communicate(timeout=60)
        # what the gateway stored as it stopped is forwarded by the next forwarder
        catch_up = subprocess.run(
            [command[0], "forward", "--once"],
            env=environment,
            cwd=tmp_path,
            capture_output=True,
            timeout=120,
            check=False,
        )
        forwarded = posthog.wait_for(3)

    assert process.returncode == 0
    assert (native.status_code, native.json()) == (
        200,
        {"accepted": 2, "duplicates": 0, "rejected": []},
    )
    assert (wrong.status_code, wrong.json()) == (401, {"error": "unknown write key"})
    assert flags.status_code == 200
    assert [(a.status_code, a.json()["accepted"]) for a in answers] == [(200, 1)]
    # stored, and forwarded before the process ended: nothing buffered was lost
    assert _stored_ids(directory) == sorted(first + last)
    assert catch_up.returncode == 0, catch_up.stderr.decode()
    assert sorted(e["uuid"] for e in forwarded) == sorted(first + last)  # each once
    table = catch_up.stdout.decode()
    assert "forwarded to PostHog" in table
    assert re.search(r"│ shop\s+│\s+│\s+│\s+0 │", table), table  # nothing left behind
    assert [body["token"] for _, body, _ in posthog.flag_requests] == [POSTHOG_KEY]

    text = (out + err).decode()
    for secret in (WRITE_KEY, POSTHOG_KEY, WRONG_KEY):
        assert secret not in text
    notice, *lines = err.decode().splitlines()
    assert notice == "embedded ClickHouse (chDB) belongs to one process: serving with 1 worker"
    records = [json.loads(line) for line in lines]  # every line one JSON object
    assert [r["message"][:80] for r in records if r["level"] == "error"] == []  # a clean stop
    access = {
        (r["message"], r.get("request_id", "")[:12])
        for r in records
        if r["logger"] == "headwater.gateway.access"
    }
    assert ("POST /v1/events 200", "req-native-1") in access
    (refused,) = [r for r in records if r["message"] == "POST /v1/events 401"]
    assert (refused["level"], refused["status"], len(refused["request_id"])) == ("info", 401, 32)
    assert {"time", "level", "logger", "message"} <= set(records[0])
