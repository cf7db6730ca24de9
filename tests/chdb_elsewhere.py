"""Reading a chDB directory from another process: a process opens one chDB directory, and
the test process may already hold the session's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

_SCRIPT = (
    "import sys, json, clickhouse_connect\n"
    "client = clickhouse_connect.get_client(dsn=f'chdb://{sys.argv[1]}')\n"
    "rows = client.query(sys.argv[2]).result_rows\n"
    "print(json.dumps([list(row) for row in rows], default=str))\n"
)


def query_elsewhere(directory: Path, sql: str) -> list[list[Any]]:
    """The rows of `sql` in the chDB directory `directory`, read by a process of its own
    (values JSON can hold as they are, others as their text)."""
    found = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(directory), sql],
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[list[Any]] = json.loads(found.stdout)
    return rows
