"""`headwater serve`, plus a switch that makes ClickHouse itself refuse inserts.

`python serve_with_insert_switch.py CONTROL_DIR --host H --port P`, with the same
`HEADWATER_*` environment as `headwater serve`: the same settings, the same app
(`create_app(settings, gateway=...)`), served by uvicorn with the same options, on the
embedded ClickHouse (chDB) only.

While the file `CONTROL_DIR/fail-inserts` exists, the `events` table carries
`parts_to_throw_insert = 1`: every insert into it fails inside ClickHouse with
TOO_MANY_PARTS (code 252), the error a server gives when merges fall behind inserts,
while reads, merges and the other tables work on. Once the file is gone the setting is
reset. The change goes through the gateway's own `ClickHouse` connection, under its lock,
because chDB allows one session per process; `CONTROL_DIR/fail-inserts.applied` exists
while the setting is in force, so the test knows when the fault begins and ends.

Why this fault: as root, `chmod` does not stop chDB from writing; detaching the table
would fail inserts with UNKNOWN_TABLE and the readiness probe too, and a fake sink would
not be ClickHouse. Too many parts is the insert failure production ClickHouse actually
produces under load, and it is undone by one `RESET SETTING`.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import uvicorn

from headwater.gateway import ClickHouse, Gateway, Settings, create_app
from headwater.gateway._logging import configure_logging

POLL_SECONDS = 0.02


def watch(control: Path, clickhouse: ClickHouse, stopping: threading.Event) -> None:
    """Apply and undo the fault as the control file appears and goes."""
    wanted, applied = control / "fail-inserts", control / "fail-inserts.applied"
    table = f"{clickhouse.database}.events"
    while not stopping.wait(POLL_SECONDS):
        if wanted.exists() and not applied.exists():
            clickhouse.command(f"ALTER TABLE {table} MODIFY SETTING parts_to_throw_insert = 1")
            applied.touch()
        elif not wanted.exists() and applied.exists():
            clickhouse.command(f"ALTER TABLE {table} RESET SETTING parts_to_throw_insert")
            applied.unlink()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("control", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = Settings.from_env()
    assert settings.embedded, "the insert switch works on the embedded ClickHouse (chDB)"
    configure_logging("INFO")
    clickhouse = ClickHouse.connect(settings.clickhouse_url, database=settings.clickhouse_database)
    app = create_app(settings, gateway=Gateway(settings, clickhouse=clickhouse), freeze_heap=True)
    stopping = threading.Event()
    switch = threading.Thread(target=watch, args=(args.control, clickhouse, stopping), daemon=True)
    switch.start()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    finally:
        stopping.set()
        switch.join()
        clickhouse.close()


if __name__ == "__main__":
    main()
