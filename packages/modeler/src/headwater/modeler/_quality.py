"""A data-quality run: every configured check, each result a row of `dq_results`."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import msgspec
from clickhouse_connect.driver.exceptions import ClickHouseError

from ._alerts import CheckOutcome, Status
from ._checks import Finding, Probe, evaluate
from ._clickhouse import ClickHouse, millis
from ._config import AnyCheck, ModelConfig
from ._errors import WarehouseUnavailable

logger = logging.getLogger("headwater.modeler")

DQ_RESULTS = """
CREATE TABLE IF NOT EXISTS {db}.dq_results (
    run_id String,
    checked_at DateTime64(3, 'UTC'),
    check_name LowCardinality(String),
    table_name LowCardinality(String),
    severity LowCardinality(String),
    status LowCardinality(String),
    observed Nullable(Float64),
    threshold String,
    details String,
    sample String
) ENGINE = MergeTree PARTITION BY toYYYYMM(checked_at) ORDER BY (checked_at, check_name)
"""
COLUMNS = (
    "run_id", "checked_at", "check_name", "table_name", "severity", "status", "observed",
    "threshold", "details", "sample",
)  # fmt: skip
_encode = msgspec.json.Encoder().encode


def run_checks(
    clickhouse: ClickHouse,
    config: ModelConfig,
    *,
    now: datetime | None = None,
    only: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> list[CheckOutcome]:
    """Run the configured checks (or those named in `only`) and record them in `dq_results`.

    A check whose SQL fails (a missing table, a bad expression) or whose PostgreSQL
    cannot answer is a failing outcome that says why; it does not stop the others.
    `environ` holds the variables `dsn_env` names (default: the process environment).
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    probe = Probe(clickhouse, moment, uuid.uuid4().hex, os.environ if environ is None else environ)
    checks = [c for c in config.checks if not only or c.name in only]
    results = [_outcome(check, _find(check, probe), probe) for check in checks]
    _record(clickhouse, results)
    return [outcome for outcome, _ in results]


def failed(outcomes: Sequence[CheckOutcome]) -> bool:
    """Whether an error-severity check failed (what makes `headwater check` exit 1)."""
    return any(o.status == "fail" for o in outcomes)


def _find(check: AnyCheck, probe: Probe) -> Finding:
    try:
        return evaluate(check, probe)
    except ClickHouseError as exc:
        logger.warning("check %s could not run: %s", check.name, exc)
        reason = str(exc).strip().splitlines()[0][:500]
        return Finding(True, None, "the check runs", f"check could not run: {reason}")


def _outcome(check: AnyCheck, finding: Finding, probe: Probe) -> tuple[CheckOutcome, str]:
    status: Status = "pass"
    if finding.broken:
        status = "fail" if check.severity == "error" else "warn"
    outcome = CheckOutcome(
        run_id=probe.run_id,
        check_name=check.name,
        table_name=check.table,
        severity=check.severity,
        status=status,
        observed=finding.observed,
        threshold=finding.threshold,
        details=finding.details,
        checked_at=probe.now,
        reproduce=f"headwater check --only {check.name}",
    )
    return outcome, "[" + ",".join(finding.sample) + "]"


def _record(clickhouse: ClickHouse, results: Sequence[tuple[CheckOutcome, str]]) -> None:
    """One insert for the run's rows; `sample` is a JSON array of failing rows."""
    lines = [
        _encode([o.run_id, millis(o.checked_at), o.check_name, o.table_name, o.severity,
                 o.status, o.observed, o.threshold, o.details, sample])
        for o, sample in results
    ]  # fmt: skip
    try:
        clickhouse.command(DQ_RESULTS.format(db=clickhouse.database))
        if lines:
            clickhouse.insert_lines("dq_results", COLUMNS, b"\n".join(lines))
    except ClickHouseError as exc:
        raise WarehouseUnavailable(f"dq_results in {clickhouse.database}: {exc}") from exc
