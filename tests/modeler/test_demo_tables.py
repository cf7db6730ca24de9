"""The demo's tables say what they count: distinct users per funnel step, marked
incomplete retention periods, labelled active-user windows."""

from __future__ import annotations

from datetime import date, timedelta

from rich.console import Console
from rich.table import Table

from headwater.gateway._demo import active_users_table, funnel_table, retention_table
from headwater.modeler.synthetic import generate

from . import reference as ref
from .conftest import PROJECT, Warehouse

END = date(2026, 11, 18)  # a Wednesday: the last week is not over
STEPS = ("page_view", "add_to_cart", "checkout_started", "order_completed")


def cells(table: Table) -> list[list[str]]:
    """The table's rows as the text of their cells."""
    columns = [[str(cell) for cell in column.cells] for column in table.columns]
    return [list(row) for row in zip(*columns, strict=True)]


def rendered(table: Table) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(table)
    return " ".join(console.export_text().split())  # captions wrap at the table's width


def test_the_funnel_counts_distinct_users_and_labels_entries(warehouse: Warehouse) -> None:
    events = generate(users=300, days=30, seed=5, end=END)
    warehouse.load(events)
    warehouse.runner.run()
    table = funnel_table(warehouse.clickhouse, warehouse.db)
    users = ref.funnel_users(events, steps=STEPS, window=timedelta(days=1))
    entries = [0] * len(STEPS)
    for row in ref.funnel(
        events, project=PROJECT, name="purchase", steps=STEPS, window=timedelta(days=1)
    ):
        entries[row.step - 1] += row.users
    assert cells(table) == [
        [str(n), step, f"{users[n - 1]:,}", f"{users[n - 1] / users[0]:.1%}", f"{entries[n - 1]:,}"]
        for n, step in enumerate(STEPS, 1)
    ]
    assert users[0] <= 300 < entries[0]  # entries are user-days, users are people
    assert "users: distinct users who reached the step" in rendered(table)


def test_incomplete_retention_periods_are_marked(warehouse: Warehouse) -> None:
    events = generate(users=200, days=30, seed=6, end=END)
    warehouse.load(events)
    warehouse.runner.run()
    table = retention_table(warehouse.clickhouse, warehouse.db, periods=8)
    expected = ref.retention(events, project=PROJECT, granularity="week", max_period=8)
    by_cohort: dict[date, list[str]] = {}
    for row in expected:
        shown = f"{row.retention_rate:.0%}" + ("" if row.is_complete else "*")
        by_cohort.setdefault(row.cohort_start, []).append(shown)
    assert cells(table) == [
        [f"{cohort:%d %b}", str(next(r.cohort_size for r in expected if r.cohort_start == cohort)),
         *shown, *[""] * (9 - len(shown))]
        for cohort, shown in by_cohort.items()
    ]  # fmt: skip
    last_cohort = max(by_cohort)
    assert by_cohort[last_cohort] == ["100%*"]  # this week: not over
    assert "* dimmed: the week is not over" in rendered(table)


def test_active_users_say_which_window(warehouse: Warehouse) -> None:
    events = generate(users=100, days=20, seed=7, end=END)
    warehouse.load(events)
    warehouse.runner.run()
    table = active_users_table(warehouse.clickhouse, warehouse.db, days=3)
    rows = ref.active_users(events, project=PROJECT)[-3:]
    assert cells(table) == [
        [f"{r.day:%a %d %b}", str(r.dau), str(r.wau), str(r.mau), f"{r.stickiness:.1%}"]
        for r in rows
    ]
    assert "WAU, MAU: in the 7, 30 days ending on it" in rendered(table)
