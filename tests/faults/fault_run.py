"""One fault scenario's parts, started and stopped in order, and its outcome.

`FaultRun` owns, under one directory: a `redis-server` of its own (optional), the
gateway process (`headwater serve`, or its insert-switch launcher), a slow TCP proxy in
front of it (optional), a PostHog stand-in's forwarded events (optional: any
`ForwardTarget` on loopback), and the application processes tracking through the SDK.
A scenario starts the application, injects its faults inside `with run.fault(name):`
and then calls `finish()`: the application stops tracking, flushes and exits, the
gateway stops (SIGINT), and its chDB directory is read from another process.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from .application import Application
from .gateway import GatewayProcess
from .outcome import Fault, Outcome, Stored
from .redis_process import RedisProcess
from .slow_proxy import SlowProxy

POSTHOG_API_KEY = "phc_faults"
FORWARD_POLL_SECONDS = 0.2
FORWARD_WAIT_SECONDS = 90.0  # for the last events to reach PostHog before the gateway stops


class ForwardTarget(Protocol):
    """A PostHog on loopback that records what it received (tests/gateway/posthog_standin)."""

    @property
    def url(self) -> str: ...

    @property
    def events(self) -> list[dict[str, Any]]: ...


class FaultRun:
    """A scenario's gateway, Redis, proxy and applications; a context manager."""

    def __init__(
        self,
        directory: Path,
        *,
        scenario: str,
        rate: float,
        redis: bool = True,
        insert_switch: bool = False,
        slow_proxy: bool = False,
        forward_to: ForwardTarget | None = None,
        gateway_env: dict[str, str] | None = None,
        sdk_options: dict[str, float] | None = None,
        spool: bool = False,
    ) -> None:
        self.directory = directory
        self.scenario = scenario
        self.rate = rate
        self.sdk_options = sdk_options or {}
        self.spool = directory / "spool" if spool else None
        self.redis = RedisProcess(directory / "redis") if redis else None
        self.gateway = GatewayProcess(
            directory / "gateway",
            redis_url=self.redis.url if self.redis else None,
            posthog=(forward_to.url, POSTHOG_API_KEY) if forward_to else None,
            env=gateway_env,
            insert_switch=insert_switch,
        )
        self.proxy = SlowProxy(self.gateway.port) if slow_proxy else None
        self.forward_to = forward_to  # a scenario's drive may break it (scenario 4)
        self.forwarding = ForwardWatch(forward_to) if forward_to else None
        self.apps: list[Application] = []
        self.faults: list[Fault] = []
        self.notes: dict[str, int] = {}
        self._stack = contextlib.ExitStack()
        self._started = 0.0

    def __enter__(self) -> FaultRun:
        self._started = time.monotonic()
        with self._stack as stack:
            if self.redis is not None:
                stack.callback(self.redis.close)
                self.redis.start()
            stack.callback(self.gateway.close)
            self.gateway.start()
            if self.proxy is not None:
                stack.enter_context(self.proxy)
            if self.forwarding is not None:
                stack.enter_context(self.forwarding)
            stack.callback(self._close_apps)
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _close_apps(self) -> None:
        for app in self.apps:
            app.close()

    # -- the application -------------------------------------------------------

    @property
    def host(self) -> str:
        """Where the application sends: through the proxy when there is one."""
        return self.proxy.url if self.proxy is not None else self.gateway.url

    @property
    def app(self) -> Application:
        """The application process started last."""
        return self.apps[-1]

    def start_app(self, *, kill_after: int = 0) -> Application:
        life = len(self.apps)
        app = Application(
            self.directory / f"app-{life}",
            host=self.host,
            rate=self.rate,
            options=self.sdk_options,
            spool=self.spool,
            kill_after=kill_after,
            life=life,
        )
        self.apps.append(app)
        return app

    def calm(self, seconds: float) -> None:
        """Let the application track for `seconds` more at its rate (no fault)."""
        latest = self.app.latest()
        self.app.wait_tracked((latest.tracked if latest else 0) + int(seconds * self.rate))

    @contextlib.contextmanager
    def fault(self, name: str) -> Iterator[None]:
        """Record a fault: it begins on entry and is repaired by the end of the block."""
        began = time.monotonic()
        yield
        self.faults.append(Fault(name, began, time.monotonic()))

    # -- the end ---------------------------------------------------------------

    def finish(self) -> Outcome:
        """Stop the application (it flushes), then the gateway; count what was stored."""
        self.app.finish()
        tracked = frozenset(i for app in self.apps for i in app.ids())
        if self.forwarding is not None:
            self.forwarding.wait_for(tracked, FORWARD_WAIT_SECONDS)
        code = self.gateway.stop()
        assert code == 0, f"the gateway exited with {code}:\n{self.gateway.log_tail()}"
        seconds = time.monotonic() - self._started
        forwarded, lag = self.forwarding.result() if self.forwarding else (None, None)
        finals = [final for app in self.apps if (final := app.latest()) is not None]
        drops: Counter[str] = Counter()
        for final in finals:
            drops.update(final.stats["dropped_by_reason"])
        for counter in ("retried", "duplicates"):  # as the clients counted them
            self.notes[f"sdk_{counter}"] = sum(int(final.stats[counter]) for final in finals)
        return Outcome(
            scenario=self.scenario,
            tracked=tracked,
            refused=sum(final.refused for final in finals),
            stored=Stored.read(self.gateway.chdb_dir),
            faults=list(self.faults),
            recover_seconds=[self._recovery(fault) for fault in self.faults],
            sdk_drops=dict(drops),
            dropped_ids=frozenset(i for app in self.apps for _, i in app.drops()),
            seconds=seconds,
            forwarded=forwarded,
            forward_lag_peak=lag,
            notes=dict(self.notes),
        )

    def _recovery(self, fault: Fault) -> float | None:
        """Seconds from the repair until the application had settled every event it held
        then: tracked by that moment, or left in the spool by a process that died."""
        started = [app for app in self.apps if app.started_at <= fault.ended]
        app = started[-1]
        lines = app.progress()
        if not lines:
            return None
        before = [p for p in lines if p.t <= fault.ended]
        owed = before[-1].tracked if before else 0
        if app.started_at >= fault.began:  # a new process: it inherits the spool's rows
            owed += int(lines[0].stats["spooled"])
        for line in lines:
            if line.t >= fault.ended and line.settled >= owed:
                return line.t - fault.ended
        return None


class ForwardWatch:
    """Notes when each event reaches the PostHog stand-in, for the forward lag's peak."""

    def __init__(self, target: ForwardTarget) -> None:
        self._target = target
        self._seen = 0
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="forward-watch", daemon=True)

    def __enter__(self) -> ForwardWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(FORWARD_POLL_SECONDS):
            self._poll()

    def _poll(self) -> None:
        events = self._target.events
        now = time.time()
        for event in events[self._seen :]:
            when = datetime.fromisoformat(str(event["timestamp"])).timestamp()
            self.peak = max(self.peak, now - when)
        self._seen = len(events)

    def wait_for(self, ids: frozenset[str], timeout: float) -> None:
        """Until every one of `ids` was forwarded, or `timeout` seconds passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ids <= {str(event["uuid"]) for event in self._target.events}:
                return
            time.sleep(1.0)

    def result(self) -> tuple[Counter[str], float]:
        """(uuid → times received, the peak lag in seconds) once forwarding is over."""
        self._stop.set()
        self._thread.join()
        self._poll()
        return Counter(str(event["uuid"]) for event in self._target.events), self.peak
