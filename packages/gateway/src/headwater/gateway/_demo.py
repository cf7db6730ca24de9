"""`headwater demo`: the whole pipeline on the embedded default, in under a minute.

A synthetic shop's events (signups, plan changes, a purchase funnel, churn) go through
the SDK to a gateway served from this process, into chDB; the models run; the marts are
printed. The data stays in the demo database for `headwater model status` and friends.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from headwater.modeler import ClickHouse, FileLock, ModelConfig, Runner
from headwater.modeler.synthetic import generate
from headwater.sdk import Client, ClientOptions

from ._app import create_app
from ._embedded import serving
from ._gateway import Gateway
from ._settings import Settings

DEMO_KEY = "hw_demo_key"


def run_demo(*, directory: Path, users: int, days: int, seed: int, console: Console) -> None:
    """Emit, store, model and print; `directory` holds the chDB data."""
    started = time.perf_counter()
    settings = Settings(
        clickhouse_url=f"chdb://{directory / 'clickhouse'}",
        clickhouse_database="demo",
        write_keys={DEMO_KEY: "demo"},
    )
    clickhouse = ClickHouse.connect(settings.clickhouse_url, database="demo")
    try:
        clickhouse.command("DROP DATABASE IF EXISTS demo")
        sent = _emit(settings, clickhouse, users=users, days=days, seed=seed, console=console)
        with console.status("running the models"):
            runner = Runner(
                clickhouse, ModelConfig(), lock=FileLock(directory / "modeler-demo.lock")
            )
            report = runner.run()
        console.print(active_users_table(clickhouse))
        console.print(retention_table(clickhouse))
        console.print(funnel_table(clickhouse))
        console.print(_summary(clickhouse, sent=sent, models=len(report.results)))
    finally:
        clickhouse.close()
    console.print(
        f"done in {time.perf_counter() - started:.1f}s. Data: {directory / 'clickhouse'}"
        " (database 'demo'); explore with HEADWATER_CLICKHOUSE_DATABASE=demo headwater model status"
    )


def _emit(
    settings: Settings,
    clickhouse: ClickHouse,
    *,
    users: int,
    days: int,
    seed: int,
    console: Console,
) -> int:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    events = generate(users=users, days=days, seed=seed, end=yesterday)
    gateway = Gateway(settings, clickhouse=clickhouse)
    with (
        serving(create_app(settings, gateway=gateway)) as url,
        console.status(f"sending {len(events):,} events through the SDK to the gateway at {url}"),
    ):
        hw = Client(DEMO_KEY, host=url, options=ClientOptions(max_queue_events=len(events) + 1))
        for event in events:
            hw.capture(
                event.event,
                distinct_id=event.distinct_id,
                properties=event.properties,
                timestamp=event.timestamp,
                event_id=event.event_id,
            )
        hw.shutdown(timeout=120)
    stats = hw.stats()
    if stats.dropped:
        console.print(
            f"[yellow]{stats.dropped} events were not delivered: {stats.dropped_by_reason}"
        )
    return stats.sent


def active_users_table(ch: ClickHouse, db: str = "demo", days: int = 14) -> Table:
    """The last `days` of DAU, WAU and MAU."""
    table = Table(
        title=f"Active users, last {days} days",
        caption="DAU: distinct users active that day; WAU, MAU: in the 7, 30 days ending on it",
    )
    for column in ("day", "DAU", "WAU", "MAU", "DAU/MAU"):
        table.add_column(column, justify="right")
    for day, dau, wau, mau, stickiness in ch.rows(
        f"SELECT day, dau, wau, mau, stickiness FROM {db}.metrics_active_users"  # noqa: S608
        " ORDER BY day DESC LIMIT %(days)s",
        {"days": days},
    )[::-1]:
        table.add_row(f"{day:%a %d %b}", str(dau), str(wau), str(mau), f"{stickiness:.1%}")
    return table


def retention_table(ch: ClickHouse, db: str = "demo", periods: int = 8) -> Table:
    """Weekly cohorts by week since their first event; a period not over yet is marked."""
    rows = ch.rows(
        "SELECT cohort_start, period, cohort_size, retention_rate, is_complete"  # noqa: S608
        f" FROM {db}.retention_cohorts WHERE granularity = 'week' AND period <= %(p)s"
        " ORDER BY cohort_start, period",
        {"p": periods},
    )
    matrix: dict[date, dict[int, Text]] = defaultdict(dict)
    sizes: dict[date, int] = {}
    for cohort, period, size, rate, complete in rows:
        matrix[cohort][period] = (
            Text(f"{rate:.0%}") if complete else Text(f"{rate:.0%}*", style="dim")
        )
        sizes[cohort] = size
    table = Table(
        title="Weekly retention: share of each cohort's users active k weeks later",
        caption="cohort: the users whose first event fell in the week starting that Monday;"
        " * dimmed: the week is not over (it reaches the newest day of data)",
    )
    table.add_column("cohort")
    table.add_column("users", justify="right")
    for period in range(periods + 1):
        table.add_column(f"W{period}", justify="right")
    for cohort, rates in matrix.items():
        cells = [rates.get(p, Text("")) for p in range(periods + 1)]
        table.add_row(f"{cohort:%d %b}", str(sizes[cohort]), *cells)
    return table


def funnel_table(ch: ClickHouse, db: str = "demo", funnel: str = "purchase") -> Table:
    """A funnel over the whole range: distinct users per step, and entries (user-days)."""
    rows = ch.rows(
        "SELECT step, step_name, uniqExactMerge(users_state), sum(users)"  # noqa: S608
        f" FROM {db}.funnel_conversions WHERE funnel = %(f)s"
        " GROUP BY step, step_name ORDER BY step",
        {"f": funnel},
    )
    table = Table(
        title=f"Funnel {funnel!r} over the whole range",
        caption="users: distinct users who reached the step from at least one entry;"
        " entries: a user counts once per day they did step 1",
    )
    for column in ("step", "event", "users", "from step 1", "entries"):
        table.add_column(column, justify="right" if column != "event" else "left")
    first = rows[0][2] if rows else 0
    for step, name, users, entries in rows:
        share = f"{users / first:.1%}" if first else ""
        table.add_row(str(step), name, f"{users:,}", share, f"{entries:,}")
    return table


def _summary(ch: ClickHouse, *, sent: int, models: int) -> Table:
    (events, users, first, last) = ch.rows(
        "SELECT count(), uniqExact(distinct_id), min(timestamp), max(timestamp)"
        " FROM demo.events FINAL"
    )[0]
    table = Table(title="Data")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("events sent by the SDK", f"{sent:,}")
    table.add_row("events stored (distinct ids)", f"{events:,}")
    table.add_row("users (distinct ids)", f"{users:,}")
    table.add_row("from", f"{first:%Y-%m-%d %H:%M}")
    table.add_row("to", f"{last:%Y-%m-%d %H:%M}")
    table.add_row("models built", str(models))
    table.add_row("rows per table", "")
    for name, rows in ch.rows(
        "SELECT name, total_rows FROM system.tables WHERE database = 'demo'"
        " AND name NOT LIKE '%%staging%%' AND total_rows IS NOT NULL ORDER BY name"
    ):
        table.add_row(f"  {name}", f"{rows:,}")
    return table
