"""A write key the gateway refuses: flush() says so, on_error gets every event, one warning.

The gateway is the real one on loopback (tests/gateway/conftest.py), which answers 401 to
a write key it does not know.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from headwater.sdk import AnyMessage, AsyncClient, Client, ClientOptions, Rejected, Stats
from tests.gateway.conftest import RunningGateway

SCRIPTS = Path(__file__).parent / "scripts"
Errors = list[tuple[Exception, list[AnyMessage]]]
UNKNOWN_KEY = '{"error":"unknown write key"}'
REASON = f"rejected: Rejected: gateway rejected the events (401): {UNKNOWN_KEY}"
WARNING = (
    f"the gateway refused the write key: gateway rejected the events (401): {UNKNOWN_KEY};"
    " every event is given up on (logged once; stats() and on_error see each batch)"
)


class Report(msgspec.Struct, kw_only=True):
    """The line `scripts/wrong_key.py` prints."""

    flushed: bool
    stats: Stats


def sent_ids(errors: Errors) -> list[list[str]]:
    return [[m.event_id for m in messages] for _, messages in errors]


Outcome = tuple[list[str], bool, bool, Stats]


def run_thread(url: str, options: ClientOptions, errors: Errors) -> Outcome:
    """Five events in batches of two, flush; one more, flush. The ids, both flushes, stats()."""

    def on_error(exc: Exception, messages: list[AnyMessage]) -> None:
        errors.append((exc, messages))

    with Client("wrong-key", host=url, options=options, on_error=on_error) as hw:
        ids = [hw.capture("refused", distinct_id="u", properties={"n": n}) for n in range(5)]
        first = hw.flush(timeout=10)
        ids.append(hw.capture("refused", distinct_id="u", properties={"n": 5}))
        second = hw.flush(timeout=10)
        stats = hw.stats()
    return [i for i in ids if i is not None], first, second, stats


def run_asyncio(url: str, options: ClientOptions, errors: Errors) -> Outcome:
    """The same with the asyncio client."""

    def on_error(exc: Exception, messages: list[AnyMessage]) -> None:
        errors.append((exc, messages))

    async def scenario() -> Outcome:
        async with AsyncClient("wrong-key", host=url, options=options, on_error=on_error) as hw:
            ids = [hw.capture("refused", distinct_id="u", properties={"n": n}) for n in range(5)]
            first = await hw.flush(timeout=10)
            ids.append(hw.capture("refused", distinct_id="u", properties={"n": 5}))
            second = await hw.flush(timeout=10)
            stats = hw.stats()
        return [i for i in ids if i is not None], first, second, stats

    return asyncio.run(scenario())


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
@pytest.mark.parametrize("kind", ["thread", "asyncio"])
def test_a_refused_write_key_fails_flush_reaches_on_error_and_warns_once(
    gateway: RunningGateway,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    spool: bool,
) -> None:
    options = ClientOptions(
        flush_interval=60.0, max_batch_events=2, spool_dir=tmp_path if spool else None
    )
    errors: Errors = []
    run = run_thread if kind == "thread" else run_asyncio

    with caplog.at_level(logging.WARNING, logger="headwater.sdk"):
        ids, first, second, stats = run(gateway.url, options, errors)

    # Both flushes had an event given up on: the first five, then the sixth.
    assert (first, second) == (False, False)
    assert len(ids) == 6
    assert sent_ids(errors) == [ids[0:2], ids[2:4], ids[4:5], ids[5:6]]
    assert {(type(exc), exc.status) for exc, _ in errors} == {(Rejected, 401)}  # type: ignore[attr-defined]
    assert (stats.given_up, stats.given_up_reason, stats.sent) == (6, REASON, 0)
    assert (stats.dropped_by_reason, stats.spooled, stats.queued) == ({"rejected": 6}, 0, 0)
    # One warning for four refused batches.
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("headwater.sdk", "WARNING", WARNING)
    ]
    assert gateway.rows("SELECT count() FROM {db}.events") == [(0,)]


def test_a_refused_write_key_shows_on_stderr_without_any_logging_set_up(
    gateway: RunningGateway,
) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "wrong_key.py"), gateway.url, "5"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    report = msgspec.json.decode(done.stdout, type=Report)
    assert report.flushed is False
    assert (report.stats.given_up, report.stats.given_up_reason) == (5, REASON)
    assert report.stats.dropped_by_reason == {"rejected": 5}
    assert report.stats.last_error == f"Rejected: gateway rejected the events (401): {UNKNOWN_KEY}"
    # Python's last-resort handler prints the one warning, as the application would see it.
    assert done.stderr.splitlines() == [WARNING]
