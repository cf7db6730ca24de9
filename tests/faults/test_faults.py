"""Fault scenarios, short (issue 16): one fault each, while an application tracks 500
events/s through the SDK into `headwater serve`; then every id `track()` returned must be
stored, once after FINAL. The same scenarios run for minutes, with several faults each, in
`benchmarks/chaos.py`.

The application's SDK retries at least every second here (`backoff_cap=1`, 40 tries): with
the defaults its backoff grows towards 30 s, which a test of a few seconds cannot wait out.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..gateway.posthog_standin import posthog_standin
from .outcome import Outcome
from .scenarios import SCENARIOS, Plan

SHORT = Plan(
    faults=1,
    fault_seconds=2.0,
    calm_seconds=2.0,
    rate=500.0,
    sdk_options={"backoff_cap": 1.0, "max_retries": 40},
)


def assert_every_id_stored_once(outcome: Outcome) -> None:
    """Lost = 0, nothing stored that track() did not return, no id twice after FINAL."""
    assert (outcome.refused, outcome.sdk_drops) == (0, {}), outcome.summary()
    assert (sorted(outcome.lost), sorted(outcome.unexpected)) == ([], []), outcome.summary()
    twice = {event_id: n for event_id, n in outcome.stored.final.items() if n != 1}
    assert twice == {}, outcome.summary()
    assert outcome.stored.error_rows == 0, outcome.summary()


def test_gateway_sigkilled_and_restarted(tmp_path: Path) -> None:
    # A killed gateway cannot release the Redis claims of the insert it was running; they
    # are free once its process stops saying it is alive (5 s), not after the pending TTL
    # (60 s). Two starts of the gateway take most of this test: its calm spells are shorter.
    plan = dataclasses.replace(
        SHORT,
        fault_seconds=0.2,  # the restart takes seconds of its own
        calm_seconds=1.0,
    )

    outcome = SCENARIOS["1"].run(tmp_path, plan)

    assert_every_id_stored_once(outcome)
    assert outcome.notes["gateway_starts"] == 2
    assert outcome.notes["sdk_retried"] > 0, outcome.summary()  # the client saw it down


def test_redis_sigkilled_and_restarted_empty(tmp_path: Path) -> None:
    outcome = SCENARIOS["2"].run(tmp_path, SHORT)

    assert_every_id_stored_once(outcome)


def test_clickhouse_failing_inserts(tmp_path: Path) -> None:
    # Inserts fail longer than the gateway retries them (1 s): requests are answered 503
    # and the SDK sends them again.
    plan = dataclasses.replace(SHORT, gateway_env={"HEADWATER_INSERT_DEADLINE_SECONDS": "1"})

    outcome = SCENARIOS["3"].run(tmp_path, plan)

    assert_every_id_stored_once(outcome)
    assert outcome.twice_before_merge == 0, outcome.summary()  # claims released, not kept
    assert outcome.notes["too_many_parts_logged"] > 0, outcome.summary()
    assert outcome.notes["sdk_retried"] > 0, outcome.summary()


def test_posthog_away_while_the_gateway_is_killed(tmp_path: Path) -> None:
    # Forwarding waits 1 s for inserts in flight (10 s by default), retries PostHog at
    # least every second (30 s) and the killed gateway's lease lasts 3 s (30 s): the
    # restarted gateway forwards again within this test's time.
    forwarding = {
        "HEADWATER_FORWARD_SETTLE_SECONDS": "1",
        "HEADWATER_FORWARD_BACKOFF_CAP_SECONDS": "1",
        "HEADWATER_FORWARD_LEASE_SECONDS": "3",
    }
    plan = dataclasses.replace(SHORT, fault_seconds=4.0, calm_seconds=1.0, gateway_env=forwarding)

    with posthog_standin() as posthog:
        outcome = SCENARIOS["4"].run(tmp_path, plan, forward_to=posthog)

    assert_every_id_stored_once(outcome)
    assert outcome.forward_lost == 0, outcome.summary()  # every stored event reached PostHog
    assert outcome.notes["gateway_starts"] == 2, outcome.summary()
    assert outcome.notes["posthog_500"] > 0, outcome.summary()
    assert outcome.notes["posthog_429"] > 0, outcome.summary()


def test_answers_delayed_past_the_sdk_timeout(tmp_path: Path) -> None:
    outcome = SCENARIOS["5"].run(tmp_path, SHORT)

    assert_every_id_stored_once(outcome)
    # the SDK sent again batches the gateway had stored: answered as duplicates, stored once
    assert outcome.notes["answers_held"] > 0, outcome.summary()
    assert outcome.notes["sdk_duplicates"] > 0, outcome.summary()
    assert outcome.twice_before_merge == 0, outcome.summary()


def test_application_sigkilled_and_its_spool_reopened(tmp_path: Path) -> None:
    outcome = SCENARIOS["6"].run(tmp_path, SHORT)

    assert_every_id_stored_once(outcome)
    assert outcome.twice_before_merge == 0, outcome.summary()
