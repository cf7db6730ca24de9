"""What the modeler's commands say when they cannot start: one line on stderr naming the
problem and what to do, exit code 2, and nothing created on disk.

Each case runs in a fresh working directory with no `HEADWATER_*` variable but its own.
Most run in this process (none of them may open a chDB directory, and one that did would
fail, or leave the folder the test looks for); those that need a chDB directory of their
own, or a process's own stderr, run the installed `headwater` command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from headwater.modeler.cli import register

from ..chdb_elsewhere import query_elsewhere
from ..redis_server import free_port

START = "start the gateway (headwater serve) or run headwater demo first"
EVERY_COMMAND = [
    ["model", "run"],
    ["model", "status"],
    ["model", "schedule", "--runs", "1"],
    ["check"],
    ["health"],
]
root = typer.Typer()
register(root)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, and an environment without Headwater settings."""
    for name in [n for n in os.environ if n.startswith("HEADWATER_")]:
        monkeypatch.delenv(name)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir.resolve()


def invoke(*args: str, **environ: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(root, list(args), env=environ)
    return result.exit_code, result.stdout, result.stderr


def headwater(*args: str, cwd: Path, **environ: str) -> tuple[int, str, str]:
    """The installed command, in its own process."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("headwater")), *args],
        cwd=cwd,
        env={"PATH": str(Path(sys.executable).parent), **environ},
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def stopped(line: str) -> tuple[int, str, str]:
    return 2, "", f"headwater: {line}\n"


# ---------------------------------------------------------------- a missing database


def test_the_default_database_missing_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    """The issue as a new user met it: `headwater model run` in an empty directory."""
    code, out, err = headwater("model", "run", cwd=tmp_path)
    directory = tmp_path.resolve() / ".headwater" / "clickhouse"
    problem = f"no Headwater database at {directory} (HEADWATER_CLICKHOUSE_URL): {START}"
    assert (code, out, err) == stopped(problem)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
def test_every_command_stops_on_a_missing_database(command: list[str], workdir: Path) -> None:
    directory = workdir / ".headwater" / "clickhouse"
    problem = f"no Headwater database at {directory} (HEADWATER_CLICKHOUSE_URL): {START}"
    assert invoke(*command) == stopped(problem)
    missing = workdir.parent / "elsewhere" / "clickhouse"
    problem = f"no Headwater database at {missing} (HEADWATER_CLICKHOUSE_URL): {START}"
    assert invoke(*command, HEADWATER_CLICKHOUSE_URL=f"chdb://{missing}") == stopped(problem)
    assert list(workdir.iterdir()) == []
    assert sorted(p.name for p in workdir.parent.iterdir()) == ["work"]


def _make_chdb(directory: Path, *databases: str) -> None:
    """A chDB directory holding these Headwater databases (made by another process: this
    one holds the session's directory open)."""
    script = (
        "import sys\n"
        "from headwater.gateway import migrate\n"
        "from headwater.modeler import ClickHouse\n"
        "for name in sys.argv[2:]:\n"
        "    clickhouse = ClickHouse.connect(f'chdb://{sys.argv[1]}', database=name)\n"
        "    migrate(clickhouse)\n"
        "    clickhouse.close()\n"
    )
    directory.mkdir()
    subprocess.run([sys.executable, "-c", script, str(directory), *databases], check=True)


def _databases(directory: Path) -> list[str]:
    names = query_elsewhere(directory, "SELECT name FROM system.databases ORDER BY name")
    return [n for (n,) in names if n not in ("INFORMATION_SCHEMA", "information_schema")]


def test_a_database_missing_from_its_directory_names_those_there(tmp_path: Path) -> None:
    directory = tmp_path.resolve() / "clickhouse"
    _make_chdb(directory, "demo", "shop")
    url = f"chdb://{directory}"
    code, out, err = headwater("model", "run", cwd=tmp_path, HEADWATER_CLICKHOUSE_URL=url)
    assert (code, out, err) == stopped(
        f"no Headwater database headwater at {directory} (HEADWATER_CLICKHOUSE_DATABASE):"
        " set it to one that has events there: demo, shop"
    )
    assert _databases(directory) == ["default", "demo", "shop", "system"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clickhouse"]


def test_an_empty_directory_holds_no_database(tmp_path: Path) -> None:
    directory = tmp_path.resolve() / "clickhouse"
    directory.mkdir()
    code, out, err = headwater(
        "check",
        cwd=tmp_path,
        HEADWATER_CLICKHOUSE_URL=f"chdb://{directory}",
        HEADWATER_CLICKHOUSE_DATABASE="shop",
    )
    assert (code, out, err) == stopped(
        f"no Headwater database shop at {directory} (HEADWATER_CLICKHOUSE_DATABASE): {START}"
    )
    assert _databases(directory) == ["default", "system"]


# ---------------------------------------------------------------- a relative chDB path

RELATIVE = "HEADWATER_CLICKHOUSE_URL must be chdb:///absolute/dir, got chdb://relative/dir"


@pytest.mark.parametrize(
    "command", [*EVERY_COMMAND, ["model", "sql", "funnel_conversions"]], ids=" ".join
)
def test_a_relative_chdb_path_is_refused(command: list[str], workdir: Path) -> None:
    code, out, err = invoke(*command, HEADWATER_CLICKHOUSE_URL="chdb://relative/dir")
    assert (code, out, err) == stopped(f"bad setting: {RELATIVE}")
    assert list(workdir.iterdir()) == []


def test_a_relative_chdb_path_in_the_config_file_is_refused(workdir: Path) -> None:
    config = workdir.parent / "headwater.toml"
    config.write_text('clickhouse_url = "chdb://relative/dir"\n')
    code, out, err = invoke("model", "run", HEADWATER_CONFIG=str(config))
    assert (code, out, err) == stopped(f"bad setting: {RELATIVE}")
    assert list(workdir.iterdir()) == []


# ---------------------------------------------------------------- --from and --to


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (
            ["model", "run", "--from", "2026-11-07", "--to", "2026-11-01"],
            "--from 2026-11-07 is after --to 2026-11-01",
        ),
        (
            ["model", "sql", "agg_daily_events", "--from", "2026-11-07", "--to", "2026-11-01"],
            "--from 2026-11-07 is after --to 2026-11-01",
        ),
        (
            ["model", "run", "--from", "2026-13-01"],
            "--from 2026-13-01 is not a day: write it as YYYY-MM-DD",
        ),
        (
            ["model", "run", "--from", "2026-11-01", "--to", "yesterday"],
            "--to yesterday is not a day: write it as YYYY-MM-DD",
        ),
        (
            ["model", "sql", "agg_daily_events", "--from", "11/01/2026"],
            "--from 11/01/2026 is not a day: write it as YYYY-MM-DD",
        ),
    ],
)
def test_a_bad_day_range_is_refused_before_anything_opens(
    args: list[str], problem: str, workdir: Path
) -> None:
    assert invoke(*args) == stopped(problem)
    assert list(workdir.iterdir()) == []


def test_a_reversed_range_is_one_line_from_the_installed_command(tmp_path: Path) -> None:
    code, out, err = headwater(
        "model", "run", "--from", "2026-11-07", "--to", "2026-11-01", cwd=tmp_path
    )
    assert (code, out, err) == stopped("--from 2026-11-07 is after --to 2026-11-01")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (
            "ftp://me:s3cret@ch.example.com",
            "bad setting: HEADWATER_CLICKHOUSE_URL must be chdb:///abs/dir or"
            " http(s)://user:pass@host:port/db, got 'ftp://***@ch.example.com'",
        ),
        (
            "chdb://me:s3cret@relative/dir",
            "bad setting: HEADWATER_CLICKHOUSE_URL must be chdb:///absolute/dir,"
            " got chdb://***@relative/dir",
        ),
    ],
)
def test_a_password_in_a_bad_url_is_never_shown(url: str, problem: str, workdir: Path) -> None:
    assert invoke("model", "run", HEADWATER_CLICKHOUSE_URL=url) == stopped(problem)
    config = workdir.parent / "headwater.toml"
    config.write_text(f'clickhouse_url = "{url}"\n')
    assert invoke("check", HEADWATER_CONFIG=str(config)) == stopped(problem)
    assert list(workdir.iterdir()) == []


def test_a_password_is_not_shown_when_the_server_cannot_be_reached(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://me:s3cret@127.0.0.1:{port}/"
    code, out, err = headwater("model", "status", cwd=tmp_path, HEADWATER_CLICKHOUSE_URL=url)
    assert (code, out) == (2, "")
    (line,) = err.splitlines()  # the driver's own warning is not printed beside ours
    assert line.startswith(f"headwater: cannot open ClickHouse at http://***@127.0.0.1:{port}/: ")
    assert "Connection refused" in line
    assert "s3cret" not in err
    assert list(tmp_path.iterdir()) == []
