"""`headwater schema export`: the tracking plan of tests/sdk/events.py, and its errors.

Most tests run the command in-process with typer's CliRunner (an 80-column, colourless
terminal, as in a pipe or a CI log); one runs the installed `headwater` console script.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from headwater.sdk.cli import app
from headwater.sdk.testing import RecordingClient

from .events import OrderCompleted, Plan, PlanChanged

ROOT = Path(__file__).resolve().parents[2]

ORDER_COMPLETED = {
    "title": "OrderCompleted",
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "revenue_cents": {"type": "integer"},
        "coupon": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
    },
    "required": ["order_id", "revenue_cents"],
}
PLAN_CHANGED = {
    "title": "PlanChanged",
    "type": "object",
    "properties": {
        "plan": {"$ref": "#/$defs/Plan"},
        "price": {"type": "string", "format": "decimal"},
        "effective": {"type": "string", "format": "date"},
    },
    "required": ["plan", "price", "effective"],
}
PLAN = {"title": "Plan", "enum": ["free", "pro"]}


def plan_document(events: dict[str, str], defs: dict[str, Any]) -> dict[str, Any]:
    """The tracking plan document: `events` maps each event name to its $defs entry."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Headwater tracking plan",
        "x-headwater-plan-version": 1,
        "events": {name: {"$ref": f"#/$defs/{ref}"} for name, ref in events.items()},
        "$defs": defs,
    }


WHOLE_MODULE = plan_document(
    {"order_completed": "OrderCompleted", "plan_changed": "PlanChanged"},
    {"OrderCompleted": ORDER_COMPLETED, "PlanChanged": PLAN_CHANGED, "Plan": PLAN},
)
ORDER_ONLY = plan_document(
    {"order_completed": "OrderCompleted"}, {"OrderCompleted": ORDER_COMPLETED}
)


@pytest.fixture(autouse=True)
def in_project_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository root, where `tests.sdk.events` is importable."""
    monkeypatch.chdir(ROOT)


def export(*args: str) -> Result:
    runner = CliRunner(env={"COLUMNS": "80", "FORCE_COLOR": None, "NO_COLOR": "1"})
    return runner.invoke(app, ["schema", "export", *args])


def test_a_module_exports_every_event_it_defines() -> None:
    result = export("tests.sdk.events")

    assert (result.exit_code, result.stderr) == (0, "")
    assert json.loads(result.stdout) == WHOLE_MODULE
    assert result.stdout == json.dumps(WHOLE_MODULE, indent=2) + "\n"


def test_one_class_exports_to_a_file(tmp_path: Path) -> None:
    output = tmp_path / "plan.json"

    result = export("tests.sdk.events:OrderCompleted", "-o", str(output))

    assert (result.exit_code, result.stdout) == (0, "")
    assert json.loads(output.read_bytes()) == ORDER_ONLY
    assert output.read_text(encoding="utf-8") == json.dumps(ORDER_ONLY, indent=2) + "\n"


def test_targets_are_exported_in_order_and_once_each() -> None:
    result = export(
        "tests.sdk.events:PlanChanged", "tests.sdk.events:OrderCompleted", "tests.sdk.events"
    )

    assert result.exit_code == 0
    assert json.loads(result.stdout) == plan_document(
        {"plan_changed": "PlanChanged", "order_completed": "OrderCompleted"},
        {"PlanChanged": PLAN_CHANGED, "Plan": PLAN, "OrderCompleted": ORDER_COMPLETED},
    )
    assert list(json.loads(result.stdout)["$defs"]) == ["PlanChanged", "Plan", "OrderCompleted"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module", "cannot import 'no_such_module': No module named 'no_such_module'"),
        ("tests.sdk.events:Plan", "'tests.sdk.events:Plan' is not an Event subclass"),
        ("tests.sdk.events:Missing", "'tests.sdk.events:Missing' is not an Event subclass"),
        ("tests.sdk.events:Event", "'tests.sdk.events:Event' is not an Event subclass"),
        ("tests.sdk", "module 'tests.sdk' defines no Event subclass"),
    ],
)
def test_a_bad_target_exits_2_with_a_clear_message(target: str, message: str) -> None:
    result = export(target)

    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {message}\n")


def test_one_bad_target_among_good_ones_writes_nothing(tmp_path: Path) -> None:
    output = tmp_path / "plan.json"

    result = export("tests.sdk.events", "no_such_module", "-o", str(output))

    assert (result.exit_code, result.stdout, result.stderr) == (
        2,
        "",
        "error: cannot import 'no_such_module': No module named 'no_such_module'\n",
    )
    assert not output.exists()


def test_messages_are_printed_whole_however_long(tmp_path: Path) -> None:
    # A real project path is often longer than the 80 columns of a pipe or CI log:
    # the message must stay one line (greppable, copyable), the path unbroken.
    output = tmp_path / ("a-directory-with-a-long-name-" * 2) / "plan.json"
    output.parent.mkdir()
    target = "tests.sdk.events:" + "NoSuchEventWithAVeryLongNameThatGoesOnAndOn" * 2

    written = export("tests.sdk.events:OrderCompleted", "-o", str(output))
    refused = export(target)

    assert (written.exit_code, written.stderr) == (0, f"tracking plan written to {output}\n")
    assert (refused.exit_code, refused.stderr) == (
        2,
        f"error: '{target}' is not an Event subclass\n",
    )


def test_a_target_is_printed_as_given_not_as_markup() -> None:
    result = export("tests.sdk.events:[bold]Order")

    assert (result.exit_code, result.stderr) == (
        2,
        "error: 'tests.sdk.events:[bold]Order' is not an Event subclass\n",
    )


def test_an_output_directory_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    output = tmp_path / "missing" / "plan.json"

    result = export("tests.sdk.events", "-o", str(output))

    # A message and status 2 like any other mistake on the command line, not a traceback.
    assert (result.exit_code, type(result.exception)) == (2, SystemExit)
    assert result.stderr.startswith("error: ")
    assert "plan.json" in result.stderr


def test_the_console_script_exports_the_plan() -> None:
    script = Path(sys.executable).parent / "headwater"

    completed = subprocess.run(
        [str(script), "schema", "export", "tests.sdk.events:OrderCompleted"],
        cwd=ROOT,
        capture_output=True,
        timeout=50,  # a guard against a hung process, not a measurement
        check=False,
    )

    assert (completed.returncode, completed.stderr) == (0, b"")
    assert json.loads(completed.stdout) == ORDER_ONLY


def sent_properties(recorder: RecordingClient) -> list[tuple[str, dict[str, Any]]]:
    """Typed events as a real client encodes them: (event name, properties)."""
    recorder.track(OrderCompleted(order_id="o1", revenue_cents=1299), distinct_id="u")
    recorder.track(OrderCompleted(order_id="o2", revenue_cents=0, coupon="W"), distinct_id="u")
    recorder.track(
        PlanChanged(plan=Plan.PRO, price=Decimal("9.90"), effective=date(2026, 12, 1)),
        distinct_id="u",
    )
    return [(m.event, m.properties) for m in recorder.messages]


def test_the_plan_names_the_properties_real_events_carry(
    headwater_recorder: RecordingClient,
) -> None:
    sent = sent_properties(headwater_recorder)

    assert sent == [
        ("order_completed", {"order_id": "o1", "revenue_cents": 1299, "coupon": None}),
        ("order_completed", {"order_id": "o2", "revenue_cents": 0, "coupon": "W"}),
        ("plan_changed", {"plan": "pro", "price": "9.90", "effective": "2026-12-01"}),
    ]
    defs = WHOLE_MODULE["$defs"]
    for name, properties in sent:
        schema = defs[WHOLE_MODULE["events"][name]["$ref"].removeprefix("#/$defs/")]
        assert set(properties) == set(schema["properties"])
        assert set(schema["required"]) <= set(properties)
    assert sent[2][1]["plan"] in defs["Plan"]["enum"]


def test_the_exported_plan_validates_real_events(headwater_recorder: RecordingClient) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    plan = json.loads(export("tests.sdk.events").stdout)

    def validator(name: str) -> Any:
        schema = {"$schema": plan["$schema"], "$defs": plan["$defs"], **plan["events"][name]}
        return jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )

    for name, properties in sent_properties(headwater_recorder):
        assert list(validator(name).iter_errors(properties)) == []
    wrong = {"order_id": "o3", "revenue_cents": "12.99"}
    assert [e.json_path for e in validator("order_completed").iter_errors(wrong)] == [
        "$.revenue_cents"
    ]
    wrong = {"plan": "gold", "effective": "1 December"}
    assert sorted(e.message for e in validator("plan_changed").iter_errors(wrong)) == [
        "'1 December' is not a 'date'",
        "'gold' is not one of ['free', 'pro']",
        "'price' is a required property",
    ]
