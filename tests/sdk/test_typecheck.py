"""What a type checker says about typed events: `mypy --strict` on the samples.

Each sample in tests/typecheck_samples/ (excluded from the repository's own ruff and
mypy runs) marks every line mypy must reject with `# expect: <error code>`; a sample
without such marks must type-check cleanly. One mypy run per sample, in a subprocess
with the project's configuration (pyproject.toml, found from the repository root).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = Path("tests", "typecheck_samples")

_EXPECT = re.compile(r"#\s*expect:\s*(?P<codes>[a-z-]+(?:\s*,\s*[a-z-]+)*)\s*$")
_REPORT = re.compile(
    r"^(?P<path>[^:]+):(?P<line>\d+): (?P<severity>error|note): (?P<text>.*?)"
    r"(?:  \[(?P<code>[a-z-]+)\])?$"
)

Finding = tuple[int, str]  # (line, mypy error code)


def expected_errors(sample: Path) -> set[Finding]:
    """The (line, code) pairs the sample's `# expect:` comments announce."""
    found: set[Finding] = set()
    lines = (ROOT / sample).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if match := _EXPECT.search(line):
            found |= {(number, code.strip()) for code in match["codes"].split(",")}
    return found


def run_mypy(sample: Path, cache_dir: Path) -> tuple[int, set[Finding]]:
    """mypy --strict on one sample: its exit status and the (line, code) of each error."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(cache_dir),
            "--show-error-codes",
            "--no-error-summary",
            "--no-pretty",
            "--no-color-output",
            str(sample),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,  # a guard against a hung mypy, not a measurement
        check=False,
    )
    assert completed.stderr == ""
    errors: set[Finding] = set()
    for line in completed.stdout.splitlines():
        report = _REPORT.match(line)
        assert report is not None, f"unexpected mypy output: {line!r}"
        assert Path(report["path"]) == sample
        if report["severity"] == "error":
            errors.add((int(report["line"]), report["code"] or "no-code"))
    return completed.returncode, errors


def test_correct_use_of_typed_events_type_checks(tmp_path: Path) -> None:
    sample = SAMPLES / "typed_events_ok.py"
    assert expected_errors(sample) == set()
    assert run_mypy(sample, tmp_path) == (0, set())


def test_mistakes_with_typed_events_are_rejected(tmp_path: Path) -> None:
    sample = SAMPLES / "typed_events_wrong.py"
    # Wrong property type (17, 23), missing required property (19), unknown property (21),
    # a plain dict, a class or a typed event where they do not belong (25, 27, 33, 40),
    # distinct_id left out or passed by position (30, 31), the optional id taken as str
    # (35), and an AsyncClient.flush() never awaited (41).
    expected = {
        (17, "arg-type"),
        (19, "call-arg"),
        (21, "call-arg"),
        (23, "arg-type"),
        (25, "arg-type"),
        (27, "arg-type"),
        (30, "call-arg"),
        (31, "call-arg"),
        (33, "arg-type"),
        (35, "assignment"),
        (40, "arg-type"),
        (41, "unused-coroutine"),
    }
    assert expected_errors(sample) == expected
    assert run_mypy(sample, tmp_path) == (1, expected)


def test_events_take_their_properties_by_keyword_only(tmp_path: Path) -> None:
    # _event.py promises "a keyword-only msgspec Struct": OrderCompleted("o1", 1299)
    # must be an error, as it is for any call with too many positional arguments.
    sample = SAMPLES / "keyword_only_events.py"
    assert expected_errors(sample) == {(14, "call-arg")}
    assert run_mypy(sample, tmp_path) == (1, {(14, "call-arg")})
