"""The fault scenarios of issue 16, each a setup and a drive over a `FaultRun`.

The short tests (`test_faults.py`) run each with one fault; `benchmarks/chaos.py` runs
them for minutes with several. Scenario 4 (PostHog down, then 500 and 429) is for the
forwarder's own tests: `Scenario.run(..., forward_to=<PostHog stand-in>)` makes the
gateway forward there, a drive breaks it through `run.forward_to`, and the outcome
compares the ids forwarded too (`Outcome.forward_lost`, `forward_twice`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..gateway.posthog_standin import PostHogStandIn
from .fault_run import FaultRun, ForwardTarget
from .outcome import Outcome

# Scenario 5: the SDK gives up on an answer after this long, the proxy holds answers
# back this much longer, so every request sent during the fault is answered too late.
SLOW_REQUEST_TIMEOUT = 1.0
SLOW_DELAY = 1.5


@dataclass(frozen=True)
class Plan:
    """How long and how hard: `faults` faults of `fault_seconds` each, with
    `calm_seconds` of steady tracking before each and after the last; `sdk_options`
    (ClientOptions fields) and `gateway_env` (HEADWATER_* variables) change defaults."""

    faults: int = 1
    fault_seconds: float = 2.0
    calm_seconds: float = 2.0
    rate: float = 500.0  # events per second, tracked by the application
    sdk_options: dict[str, float] = field(default_factory=dict)
    gateway_env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    number: str  # the numbering; a letter marks a variant
    name: str
    fault: str  # what the table calls it
    drive: Callable[[FaultRun, Plan], None]
    redis: bool = True
    insert_switch: bool = False
    slow_proxy: bool = False
    spool: bool = False
    sdk_options: dict[str, float] = field(default_factory=dict)

    def run(
        self, directory: Path, plan: Plan, *, forward_to: ForwardTarget | None = None
    ) -> Outcome:
        with FaultRun(
            directory,
            scenario=self.name,
            rate=plan.rate,
            redis=self.redis,
            insert_switch=self.insert_switch,
            slow_proxy=self.slow_proxy,
            forward_to=forward_to,
            gateway_env=plan.gateway_env,
            sdk_options={**plan.sdk_options, **self.sdk_options},
            spool=self.spool,
        ) as run:
            self.drive(run, plan)
            return run.finish()


def _gateway_killed(run: FaultRun, plan: Plan) -> None:
    run.start_app()
    for _ in range(plan.faults):
        run.calm(plan.calm_seconds)
        with run.fault("gateway SIGKILLed, restarted"):
            run.gateway.kill()
            time.sleep(plan.fault_seconds)
            run.gateway.start()
    run.calm(plan.calm_seconds)
    run.notes["gateway_starts"] = run.gateway.lives


def _redis_killed(run: FaultRun, plan: Plan) -> None:
    redis = run.redis
    assert redis is not None
    run.start_app()
    for _ in range(plan.faults):
        run.calm(plan.calm_seconds)
        with run.fault("Redis SIGKILLed, restarted empty"):
            redis.kill()
            time.sleep(plan.fault_seconds)
            redis.start()
    run.calm(plan.calm_seconds)


def _inserts_failing(run: FaultRun, plan: Plan) -> None:
    run.start_app()
    for _ in range(plan.faults):
        run.calm(plan.calm_seconds)
        with run.fault("ClickHouse refusing inserts (TOO_MANY_PARTS)"):
            run.gateway.fail_inserts(True)
            time.sleep(plan.fault_seconds)
            run.gateway.fail_inserts(False)
    run.calm(plan.calm_seconds)
    run.notes["too_many_parts_logged"] = run.gateway.log_text().count("TOO_MANY_PARTS")


def _slow_network(run: FaultRun, plan: Plan) -> None:
    proxy = run.proxy
    assert proxy is not None
    run.start_app()
    for _ in range(plan.faults):
        run.calm(plan.calm_seconds)
        with run.fault(f"answers held {SLOW_DELAY:g} s, past the SDK's {SLOW_REQUEST_TIMEOUT:g} s"):
            proxy.delay = SLOW_DELAY
            time.sleep(plan.fault_seconds)
            proxy.delay = 0.0
    run.calm(plan.calm_seconds)
    run.notes["answers_held"] = proxy.answers_held


def _posthog_away(run: FaultRun, plan: Plan) -> None:
    """PostHog unreachable for `fault_seconds` (the gateway SIGKILLed and restarted halfway
    through), then answering 500 and 429 (Retry-After 1) for a quarter of that each."""
    posthog = run.forward_to
    assert isinstance(posthog, PostHogStandIn), "scenario 4 needs a PostHog stand-in"
    run.start_app()
    for _ in range(plan.faults):
        run.calm(plan.calm_seconds)
        with run.fault("PostHog down (gateway SIGKILLed meanwhile), 500, 429, back"):
            posthog.down = True
            time.sleep(plan.fault_seconds / 2)
            run.gateway.kill()
            run.gateway.start()
            time.sleep(plan.fault_seconds / 2)
            posthog.down, posthog.status = False, 500
            time.sleep(plan.fault_seconds / 4)
            posthog.status, posthog.retry_after = 429, "1"
            time.sleep(plan.fault_seconds / 4)
            posthog.status, posthog.retry_after = 200, None
    run.calm(plan.calm_seconds)
    run.notes["gateway_starts"] = run.gateway.lives
    run.notes["posthog_500"] = posthog.answers.count(500)
    run.notes["posthog_429"] = posthog.answers.count(429)


def _app_killed(run: FaultRun, plan: Plan) -> None:
    kill_after = max(1, int(plan.calm_seconds * plan.rate))
    run.start_app(kill_after=kill_after)
    for number in range(plan.faults):
        with run.fault("application SIGKILLed right after track(), restarted on its spool"):
            run.app.wait_killed()
            time.sleep(plan.fault_seconds)
            last = number == plan.faults - 1
            run.start_app(kill_after=0 if last else kill_after)
    run.calm(plan.calm_seconds)
    backlogs = [lines[0].stats["spooled"] for app in run.apps[1:] if (lines := app.progress())]
    run.notes["spooled_at_restart"] = sum(backlogs)


SCENARIOS = {
    s.number: s
    for s in (
        Scenario("1", "gateway_killed", "gateway SIGKILLed and restarted", _gateway_killed),
        Scenario(
            "1b",
            "gateway_killed_alone",
            "gateway SIGKILLed and restarted, no Redis (in-process dedupe)",
            _gateway_killed,
            redis=False,
        ),
        Scenario("2", "redis_killed", "Redis SIGKILLed and restarted empty", _redis_killed),
        Scenario(
            "3",
            "inserts_failing",
            "ClickHouse failing inserts",
            _inserts_failing,
            insert_switch=True,
        ),
        Scenario(
            "4",
            "posthog_away",
            "PostHog down (gateway SIGKILLed meanwhile), then 500 and 429",
            _posthog_away,
        ),
        Scenario(
            "5",
            "slow_network",
            "answers delayed past the SDK's timeout",
            _slow_network,
            slow_proxy=True,
            sdk_options={"request_timeout": SLOW_REQUEST_TIMEOUT},
        ),
        Scenario(
            "6",
            "app_killed",
            "application SIGKILLed, spool reopened",
            _app_killed,
            spool=True,
        ),
    )
}
