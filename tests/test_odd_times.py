"""Odd event times end to end, as an operator meets them: `headwater serve` stores normal
events and four odd times (1900, 1970, the last millisecond of 1999, 2150) under a widened
event-time window, then `headwater model run` succeeds twice in a row, and the normal
days' DAU/WAU/MAU are those of the normal events alone."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from headwater.modeler.synthetic import SyntheticEvent, generate

from .chdb_elsewhere import query_elsewhere
from .gateway.test_serve import _wait_until_up
from .modeler import reference as ref
from .redis_server import free_port

WRITE_KEY = "wk_odd_times"
ODD_TIMES = (
    "1900-01-01T00:00:00.000Z",
    "1970-01-01T00:00:00.000Z",
    "1999-12-31T23:59:59.999Z",
    "2150-01-01T00:00:00.000Z",
)
COMMAND = str(Path(sys.executable).with_name("headwater"))


def _native(event: SyntheticEvent) -> dict[str, Any]:
    return {
        "type": "track",
        "event": event.event,
        "distinct_id": event.distinct_id,
        "event_id": event.event_id,
        "timestamp": event.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "properties": event.properties,
    }


def _send(directory: Path, cwd: Path, batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Serve a gateway on `directory` with a window that takes 1900 to 2150, post `batch`,
    stop it (SIGINT) and return its answer."""
    port = free_port()
    environment = {
        "PATH": str(Path(sys.executable).parent),
        "HEADWATER_CLICKHOUSE_URL": f"chdb://{directory}",
        "HEADWATER_WRITE_KEYS": f"{WRITE_KEY}:shop",
        "HEADWATER_MODEL_SCHEDULE": "false",
        "HEADWATER_EVENT_MAX_AGE_DAYS": "100000",
        "HEADWATER_EVENT_MAX_FUTURE_HOURS": "2000000",
    }
    process = subprocess.Popen(
        [COMMAND, "serve", "--port", str(port)],
        env=environment,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, process)
        answer = httpx.post(
            f"{url}/v1/events",
            json={"batch": batch},
            headers={"Authorization": f"Bearer {WRITE_KEY}"},
            timeout=30,
        )
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _model_run(directory: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, "model", "run"],
        check=False,
        env={
            "PATH": str(Path(sys.executable).parent),
            "HEADWATER_CLICKHOUSE_URL": f"chdb://{directory}",
        },
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _metrics(directory: Path) -> list[tuple[date, int, int, int]]:
    """metrics_active_users of the stopped pipeline."""
    rows = query_elsewhere(
        directory,
        "SELECT toString(day), dau, wau, mau FROM headwater.metrics_active_users ORDER BY day",
    )
    return [(date.fromisoformat(d), dau, wau, mau) for d, dau, wau, mau in rows]


@pytest.mark.timeout(240)
def test_odd_times_leave_two_model_runs_green_and_the_normal_days_unchanged(
    tmp_path: Path,
) -> None:
    end = datetime.now(UTC).date() - timedelta(days=1)
    events = generate(users=120, days=45, seed=3, end=end)
    odd = [
        {"type": "track", "event": "x", "distinct_id": "u00001", "event_id": str(uuid.uuid4()),
         "timestamp": when, "properties": {}}
        for when in ODD_TIMES
    ]  # fmt: skip
    batch = [_native(e) for e in events]
    half = len(batch) // 2
    directory = tmp_path / "clickhouse"
    # the odd times among the first half of the normal events; a run; the second half; a run
    answer = _send(directory, tmp_path, [*batch[:100], *odd, *batch[100:half]])
    assert answer == {"accepted": half + 4, "duplicates": 0, "rejected": []}
    first = _model_run(directory, tmp_path)
    assert first.returncode == 0, first.stderr
    answer = _send(directory, tmp_path, batch[half:])
    assert answer == {"accepted": len(batch) - half, "duplicates": 0, "rejected": []}
    second = _model_run(directory, tmp_path)
    assert second.returncode == 0, second.stderr

    expected = {
        row.day: (row.day, row.dau, row.wau, row.mau)
        for row in ref.active_users(events, project="shop")
    }
    metrics = _metrics(directory)
    normal = [row for row in metrics if min(expected) <= row[0] <= max(expected)]
    assert normal == list(expected.values())
    assert (metrics[0][0], metrics[-1][0]) == (date(1900, 1, 1), date(2150, 1, 1))
