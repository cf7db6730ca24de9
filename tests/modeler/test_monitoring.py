"""Monitoring: alerts from `headwater check`, checks after scheduled runs, pipeline health."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from headwater.gateway._metrics import Metrics
from headwater.modeler import (
    ConfigError,
    Freshness,
    GatewayTotals,
    ModelConfig,
    ModelerSettings,
    Monitor,
    PipelineHealth,
    Scheduler,
    SchemaDrift,
    Timer,
    healthy,
    pipeline_health,
    run_checks,
    signals,
)
from headwater.modeler._alerts import AlertDispatcher, JsonWebhook, MemoryAlertState
from headwater.modeler._health import fetch_gateway_totals
from headwater.modeler._ledger import Ledger
from headwater.modeler.cli import register
from headwater.modeler.synthetic import SyntheticEvent
from tests.modeler.alert_servers import MailServer, WebhookServer, free_port

from .conftest import Warehouse, WarehouseFactory

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
root = typer.Typer()
register(root)


def event(at: datetime, name: str = "page_view") -> SyntheticEvent:
    return SyntheticEvent(str(uuid.uuid4()), name, "u1", at, {})


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(root, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def checks_in_ledger(wh: Warehouse) -> list[tuple[Any, ...]]:
    return wh.clickhouse.rows(
        f"SELECT status, rows, error FROM {wh.db}.model_runs"  # noqa: S608
        " WHERE model = 'checks' ORDER BY finished_at"
    )


# ---------------------------------------------------------------- settings


def test_alert_settings_build_the_channels() -> None:
    settings = ModelerSettings.from_env(
        {
            "HEADWATER_CLICKHOUSE_URL": "http://localhost:8123",
            "HEADWATER_ALERT_SLACK_URL": "https://hooks.slack.test/services/SECRET",
            "HEADWATER_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/alerts",
            "HEADWATER_ALERT_SMTP_HOST": "127.0.0.1",
            "HEADWATER_ALERT_SMTP_PORT": "2525",
            "HEADWATER_ALERT_SMTP_FROM": "hw@example.com",
            "HEADWATER_ALERT_SMTP_TO": "a@example.com, b@example.com",
            "HEADWATER_ALERT_SMTP_STARTTLS": "true",
            "HEADWATER_ALERT_SMTP_USER": "hw",
            "HEADWATER_ALERT_SMTP_PASSWORD": "hunter2",
        }
    )
    assert (settings.alert_smtp_port, settings.alert_smtp_starttls) == (2525, True)
    assert settings.alert_smtp_to == ("a@example.com", "b@example.com")
    assert [repr(c) for c in settings.alert_channels()] == [
        "SlackWebhook(hooks.slack.test)",
        "JsonWebhook(http://127.0.0.1:9)",
        "SmtpEmail(127.0.0.1:2525 to a@example.com, b@example.com)",
    ]
    assert "SECRET" not in repr(settings)
    assert "hunter2" not in repr(settings)
    assert ModelerSettings.from_env({}, cwd=Path("/x")).alert_channels() == []


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("HEADWATER_ALERT_SMTP_PORT", "smtp", "HEADWATER_ALERT_SMTP_PORT must be a port number"),
        ("HEADWATER_ALERT_SMTP_PORT", "70000", "HEADWATER_ALERT_SMTP_PORT must be 1..65535"),
        ("HEADWATER_ALERT_SMTP_STARTTLS", "maybe", "HEADWATER_ALERT_SMTP_STARTTLS must be true"),
        ("HEADWATER_ALERT_SLACK_URL", "ftp://x/y", "HEADWATER_ALERT_SLACK_URL must be an http"),
        ("HEADWATER_ALERT_WEBHOOK_URL", "hooks", "HEADWATER_ALERT_WEBHOOK_URL must be an http"),
        ("HEADWATER_GATEWAY_METRICS_URL", "x", "HEADWATER_GATEWAY_METRICS_URL must be an http"),
        ("HEADWATER_ALERT_SMTP_HOST", "127.0.0.1", "HEADWATER_ALERT_SMTP_FROM must be an email"),
    ],
)
def test_a_bad_alert_setting_names_its_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelerSettings.from_env({variable: value}, cwd=Path("/x"))


def test_email_alerts_need_recipients() -> None:
    env = {"HEADWATER_ALERT_SMTP_HOST": "h", "HEADWATER_ALERT_SMTP_FROM": "hw@example.com"}
    with pytest.raises(ConfigError, match="HEADWATER_ALERT_SMTP_TO must be comma-separated"):
        ModelerSettings.from_env(env, cwd=Path("/x"))


# ---------------------------------------------------------------- headwater check


def test_check_alerts_once_per_failing_state_and_records_the_run(
    *,
    warehouse_factory: WarehouseFactory,
    chdb_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    webhook: WebhookServer,
    slack: WebhookServer,
    mail: MailServer,
) -> None:
    wh = warehouse_factory()
    wh.load([event(datetime.now(UTC) - timedelta(days=1))])
    config = tmp_path / "models.toml"
    config.write_text(
        '[[checks]]\nkind = "freshness"\nname = "fresh"\ntable = "events"\n'
        '[[checks]]\nkind = "completeness"\nname = "ids"\ntable = "events"\n'
        'columns = ["distinct_id"]\n'
    )
    for variable, value in {
        "HEADWATER_CLICKHOUSE_URL": chdb_url,
        "HEADWATER_CLICKHOUSE_DATABASE": wh.db,
        "HEADWATER_MODELS": str(config),
        "HEADWATER_ALERT_WEBHOOK_URL": webhook.url,
        "HEADWATER_ALERT_SLACK_URL": slack.url,
        "HEADWATER_ALERT_SMTP_HOST": "127.0.0.1",
        "HEADWATER_ALERT_SMTP_PORT": str(mail.port),
        "HEADWATER_ALERT_SMTP_FROM": "headwater@example.com",
        "HEADWATER_ALERT_SMTP_TO": "oncall@example.com,data@example.com",
    }.items():
        monkeypatch.setenv(variable, value)

    assert invoke("check")[0] == 1
    assert invoke("check")[0] == 1  # still failing: no second alert
    assert [(b["event"], b["check_name"], b["status"]) for b in webhook.delivered] == [
        ("check_failed", "fresh", "fail")
    ]
    assert [b["text"].split(":")[0] for b in slack.delivered] == ["FAIL fresh on events"]
    assert [(m.rcpt_tos, m.message["Subject"]) for m in mail.mails] == [
        (["oncall@example.com", "data@example.com"], "[headwater] FAIL fresh on events")
    ]

    wh.load([event(datetime.now(UTC))])
    code, output = invoke("check")
    assert code == 0, output
    assert [b["event"] for b in webhook.delivered] == ["check_failed", "check_recovered"]
    assert len(slack.delivered) == len(mail.mails) == 2
    assert checks_in_ledger(wh) == [
        ("failed", 2, "fresh fail"),
        ("failed", 2, "fresh fail"),
        ("ok", 2, ""),
    ]


def test_an_undelivered_alert_does_not_change_the_exit_code(
    warehouse_factory: WarehouseFactory,
    chdb_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wh = warehouse_factory()
    wh.load([event(datetime.now(UTC) - timedelta(days=1))])
    config = tmp_path / "models.toml"
    config.write_text(
        '[[checks]]\nkind = "freshness"\nname = "fresh"\ntable = "events"\nseverity = "warn"\n'
    )
    monkeypatch.setenv("HEADWATER_CLICKHOUSE_URL", chdb_url)
    monkeypatch.setenv("HEADWATER_CLICKHOUSE_DATABASE", wh.db)
    monkeypatch.setenv("HEADWATER_MODELS", str(config))
    monkeypatch.setenv("HEADWATER_ALERT_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("HEADWATER_ALERT_SMTP_PORT", str(free_port()))  # nothing listens
    monkeypatch.setenv("HEADWATER_ALERT_SMTP_FROM", "hw@example.com")
    monkeypatch.setenv("HEADWATER_ALERT_SMTP_TO", "oncall@example.com")
    code, output = invoke("check")
    assert code == 0, output
    assert checks_in_ledger(wh) == [("ok", 1, "fresh warn")]
    assert "alert 'WARN fresh on events' not delivered" in caplog.text


# ---------------------------------------------------------------- the schedule


def test_the_scheduler_checks_after_a_run_that_built_something(
    warehouse_factory: WarehouseFactory, webhook: WebhookServer
) -> None:
    config = ModelConfig(checks=[Freshness(name="fresh", table="events", max_age_seconds=60)])
    wh = warehouse_factory(config)
    wh.load([event(datetime.now(UTC) - timedelta(hours=2))])
    lost = JsonWebhook(f"http://127.0.0.1:{free_port()}/")  # refuses: never stops the run
    dispatcher = AlertDispatcher(
        [lost, JsonWebhook(webhook.url)], state=MemoryAlertState(), retries=0
    )
    monitor = Monitor(wh.clickhouse, config, dispatcher=dispatcher)
    scheduler = Scheduler(wh.runner, Timer(interval=3600), monitor=monitor)

    report = scheduler.tick()
    assert not report.skipped
    assert [(o.check_name, o.status) for o in scheduler.outcomes] == [("fresh", "fail")]
    assert [b["check_name"] for b in webhook.delivered] == ["fresh"]
    assert (dispatcher.counts.sent, dispatcher.counts.failed) == (1, 1)
    assert checks_in_ledger(wh) == [("failed", 1, "fresh fail")]

    assert scheduler.tick().skipped  # nothing new: no check run
    assert checks_in_ledger(wh) == [("failed", 1, "fresh fail")]
    assert scheduler.runs == 2


def test_the_scheduler_thread_keeps_one_dispatcher(
    warehouse_factory: WarehouseFactory, webhook: WebhookServer
) -> None:
    config = ModelConfig(checks=[Freshness(name="fresh", table="events", max_age_seconds=60)])
    wh = warehouse_factory(config)
    wh.load([event(datetime.now(UTC) - timedelta(hours=2))])
    dispatcher = AlertDispatcher(
        [JsonWebhook(webhook.url)], state=MemoryAlertState(), rate_limit=(1, 3600.0)
    )
    monitor = Monitor(wh.clickhouse, config, dispatcher=dispatcher)
    scheduler = Scheduler(wh.runner, Timer(interval=0), monitor=monitor)
    done = threading.Event()
    scheduler.start()
    try:
        while not done.wait(0.05):
            if scheduler.runs >= 1 and scheduler.outcomes:
                wh.load([event(datetime.now(UTC) - timedelta(hours=1), name="second")])
                done.set()
        while len(checks_in_ledger(wh)) < 2:
            threading.Event().wait(0.05)
    finally:
        scheduler.stop()
    # the second run's checks alerted nothing new: the same dispatcher remembered "fail"
    assert [b["check_name"] for b in webhook.delivered] == ["fresh"]
    assert dispatcher.counts.sent == 1


# ---------------------------------------------------------------- health


def ledger_row(
    wh: Warehouse, run_id: str, model: str, status: str, span: tuple[datetime, datetime]
) -> None:
    """A model_runs row of a run that started and finished at `span`."""
    started, finished = span
    wh.clickhouse.command(
        f"INSERT INTO {wh.db}.model_runs"  # noqa: S608
        " (run_id, model, partition, status, rows, duration_ms, error, started_at, finished_at)"
        " VALUES (%(run)s, %(model)s, '', %(status)s, 1, 1, '', %(started)s, %(finished)s)",
        {"run": run_id, "model": model, "status": status, "started": started, "finished": finished},
    )


def dq_row(wh: Warehouse, check: str, observed: float, at: datetime) -> None:
    wh.clickhouse.command(
        f"INSERT INTO {wh.db}.dq_results"  # noqa: S608
        " (run_id, checked_at, check_name, table_name, severity, status, observed, threshold,"
        " details, sample) VALUES ('r', %(at)s, %(check)s, 'events', 'warn', 'warn',"
        " %(observed)s, '', '', '[]')",
        {"at": at, "check": check, "observed": observed},
    )


def test_health_numbers_from_a_ledger(warehouse_factory: WarehouseFactory) -> None:
    wh = warehouse_factory()
    Ledger(wh.clickhouse).create()
    hour, day = timedelta(hours=1), timedelta(days=1)
    ledger_row(wh, "old", "stg", "failed", (NOW - 10 * day, NOW - 10 * day))  # too old
    ledger_row(wh, "a", "stg", "ok", (NOW - 2 * day, NOW - 2 * day + hour))
    ledger_row(wh, "a", "mart", "ok", (NOW - 2 * day, NOW - 2 * day + hour))
    ledger_row(wh, "b", "stg", "failed", (NOW - day, NOW - day))
    ledger_row(wh, "c", "stg", "ok", (NOW - hour, NOW - hour + timedelta(seconds=5)))
    ledger_row(wh, "d", "checks", "ok", (NOW - timedelta(minutes=1), NOW))  # not a model run
    wh.load([*(event(NOW - 2 * day) for _ in range(3)), event(NOW - day), event(NOW - hour)])
    run_checks(wh.clickhouse, ModelConfig(checks=[]), now=NOW)  # creates dq_results
    dq_row(wh, "schema", 2.0, NOW - day)
    dq_row(wh, "schema", 0.0, NOW - hour)
    dq_row(wh, "schema", 5.0, NOW - 9 * day)  # outside the window
    dq_row(wh, "fresh", 500.0, NOW - hour)  # not a schema_drift check
    config = ModelConfig(
        checks=[SchemaDrift(name="schema", table="events"), Freshness(name="fresh", table="events")]
    )

    health = pipeline_health(wh.clickhouse, config, now=NOW)
    assert health == PipelineHealth(
        now=NOW,
        runs=3,
        failed_runs=1,
        last_success=NOW - hour + timedelta(seconds=5),
        events_age_seconds=3600.0,
        events_yesterday=1,
        events_day_before=3,
        schema_changes=2,
    )
    assert health.success_rate == pytest.approx(2 / 3)
    assert health.day_over_day == pytest.approx(-2 / 3)
    found = signals(health)
    assert [(s.name, s.value, s.verdict) for s in found] == [
        ("model runs", "66.7% (2 of 3 ok)", "fail"),
        ("last successful run", "2026-11-20 11:00:05 UTC (3,595 s ago)", "ok"),
        ("events freshness", "3,600 s ago", "ok"),
        ("events per day", "1 vs 3 (-66.7%)", "fail"),
        ("schema changes", "2", "warn"),
    ]
    assert not healthy(found)


def test_health_of_an_empty_database(warehouse_factory: WarehouseFactory) -> None:
    wh = warehouse_factory()
    health = pipeline_health(wh.clickhouse, ModelConfig(), now=NOW)
    assert [(s.name, s.value, s.verdict) for s in signals(health)] == [
        ("model runs", "no run", "warn"),
        ("last successful run", "never", "warn"),
        ("events freshness", "no event", "fail"),
        ("events per day", "0 vs 0", "ok"),
        ("schema changes", "0", "ok"),
    ]


def test_health_command_exits_one_when_unhealthy(
    warehouse_factory: WarehouseFactory, chdb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wh = warehouse_factory()
    Ledger(wh.clickhouse).create()
    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    ledger_row(wh, "a", "stg", "ok", (now - 2 * hour, now - 2 * hour))
    ledger_row(wh, "b", "stg", "failed", (now - hour, now - hour))
    wh.load([event(now)])
    monkeypatch.setenv("HEADWATER_CLICKHOUSE_URL", chdb_url)
    monkeypatch.setenv("HEADWATER_CLICKHOUSE_DATABASE", wh.db)
    code, output = invoke("health")
    assert code == 1, output
    assert "50.0% (1 of 2 ok)" in output
    code, output = invoke("health", "--min-success-rate", "0.5")
    assert code == 0, output


# ---------------------------------------------------------------- the gateway's metrics


class MetricsServer:
    """Serves a fixed Prometheus text on GET /metrics, from loopback."""

    def __init__(self, body: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/metrics"

    def __enter__(self) -> MetricsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def gateway_metrics() -> bytes:
    metrics = Metrics()
    metrics.received.labels("native").inc(80)
    metrics.received.labels("segment").inc(20)
    metrics.accepted.labels("native").inc(70)
    metrics.accepted.labels("segment").inc(20)
    metrics.duplicates.labels("native").inc(4)
    metrics.rejected.labels("native").inc(6)
    metrics.forward.dead_letters.inc(2)
    metrics.forward.lag_seconds.labels("shop").set(12.5)
    metrics.forward.lag_seconds.labels("blog").set(950)
    return metrics.render()


def test_the_gateway_metrics_are_read(warehouse_factory: WarehouseFactory) -> None:
    wh = warehouse_factory()
    wh.load([event(NOW)])
    with MetricsServer(gateway_metrics()) as server:
        totals, error = fetch_gateway_totals(server.url)
        health = pipeline_health(wh.clickhouse, ModelConfig(), metrics_url=server.url, now=NOW)
    assert (totals, error) == (GatewayTotals(100.0, 90.0, 6.0, 4.0, 2.0, 950.0), "")
    assert health.gateway == totals
    assert [(s.name, s.value, s.verdict) for s in signals(health)[-2:]] == [
        ("gateway events", "90 accepted, 6 rejected, 4 duplicates (6.0% rejected)", "fail"),
        ("gateway forwarding", "2 dead letters, 950 s behind", "warn"),
    ]


def test_an_unreachable_gateway_is_unhealthy(warehouse_factory: WarehouseFactory) -> None:
    wh = warehouse_factory()
    wh.load([event(NOW)])
    url = f"http://127.0.0.1:{free_port()}/metrics"
    health = pipeline_health(wh.clickhouse, ModelConfig(), metrics_url=url, now=NOW)
    last = signals(health)[-1]
    assert (last.name, last.verdict, health.gateway) == ("gateway", "fail", None)
    assert last.value.startswith("ConnectError")
    assert not healthy(signals(health))
