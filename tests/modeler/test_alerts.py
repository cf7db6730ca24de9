"""Alert channels against real HTTP and SMTP servers on loopback, and the dispatcher's rules."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

import pytest

from headwater.modeler import ClickHouse, ConfigError
from headwater.modeler._alerts import (
    Alert,
    AlertChannel,
    AlertDeliveryError,
    AlertDispatcher,
    AlertState,
    CheckOutcome,
    ClickHouseAlertState,
    JsonWebhook,
    MemoryAlertState,
    SlackWebhook,
    SmtpEmail,
    Status,
    alert_for,
)
from tests.modeler.alert_servers import MailServer, WebhookServer, free_port

CHECKED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def outcome(
    status: Status = "fail",
    *,
    check: str = "freshness",
    run_id: str = "run-1",
    observed: float | None = 7200.0,
) -> CheckOutcome:
    return CheckOutcome(
        run_id=run_id,
        check_name=check,
        table_name="events",
        severity="error",
        status=status,
        observed=observed,
        threshold="<= 3600",
        details="newest event is 7200 s old",
        checked_at=CHECKED,
        reproduce=f"headwater check --only {check}",
    )


def dispatcher(
    channels: Sequence[AlertChannel],
    *,
    state: AlertState | None = None,
    retries: int = 3,
    rate_limit: tuple[int, float] = (100, 60.0),
    clock: Callable[[], float] = time.monotonic,
) -> AlertDispatcher:
    """A dispatcher with a backoff short enough for tests (1, 2, 4 ms)."""
    return AlertDispatcher(
        channels,
        state=state or MemoryAlertState(),
        retries=retries,
        backoff=0.001,
        max_backoff=0.004,
        rate_limit=rate_limit,
        clock=clock,
    )


# ---------------------------------------------------------------- payloads


def test_slack_message_is_block_kit_with_a_fallback(slack: WebhookServer) -> None:
    SlackWebhook(slack.url).send(Alert(kind="failing", outcome=outcome()))

    [post] = slack.posts
    assert post.path == "/hooks/alerts"
    assert post.headers["Content-Type"] == "application/json"
    assert post.body == {
        "text": "FAIL freshness on events: observed 7200, expected &lt;= 3600",
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": ":red_circle: FAIL freshness"},
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "newest event is 7200 s old"},
                "fields": [
                    {"type": "mrkdwn", "text": "*Table*\nevents"},
                    {"type": "mrkdwn", "text": "*Observed*\n7200"},
                    {"type": "mrkdwn", "text": "*Expected*\n&lt;= 3600"},
                    {"type": "mrkdwn", "text": "*Severity*\nerror"},
                ],
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": "Reproduce: `headwater check --only freshness`"},
                    {"type": "mrkdwn", "text": "Run run-1, checked 2026-05-01 12:00:00 UTC"},
                ],
            },
        ],
    }


@pytest.mark.parametrize(
    ("alert", "header", "text"),
    [
        (
            Alert(kind="failing", outcome=outcome("warn", observed=0.25)),
            ":warning: WARN freshness",
            "WARN freshness on events: observed 0.25, expected &lt;= 3600",
        ),
        (
            Alert(kind="recovered", outcome=outcome("pass", observed=12.0)),
            ":white_check_mark: RECOVERED freshness",
            "RECOVERED freshness on events: observed 12, expected &lt;= 3600",
        ),
        (
            Alert(kind="failing", outcome=outcome("fail", observed=None)),
            ":red_circle: FAIL freshness",
            "FAIL freshness on events: observed n/a, expected &lt;= 3600",
        ),
    ],
)
def test_slack_header_and_fallback_follow_the_alert(
    slack: WebhookServer, alert: Alert, header: str, text: str
) -> None:
    SlackWebhook(slack.url).send(alert)

    [body] = slack.delivered
    assert body["blocks"][0]["text"]["text"] == header
    assert body["text"] == text


def test_json_webhook_body_is_the_event_and_the_outcome(webhook: WebhookServer) -> None:
    channel = JsonWebhook(webhook.url, headers={"Authorization": "Bearer s3cret"})
    channel.send(Alert(kind="failing", outcome=outcome()))
    channel.send(Alert(kind="recovered", outcome=outcome("pass", run_id="run-2", observed=12)))

    first, second = webhook.posts
    assert first.headers["Authorization"] == "Bearer s3cret"
    assert first.headers["Content-Type"] == "application/json"
    assert first.body == {
        "event": "check_failed",
        "run_id": "run-1",
        "check_name": "freshness",
        "table_name": "events",
        "severity": "error",
        "status": "fail",
        "observed": 7200.0,
        "threshold": "<= 3600",
        "details": "newest event is 7200 s old",
        "checked_at": "2026-05-01T12:00:00Z",
        "reproduce": "headwater check --only freshness",
    }
    assert second.body == {
        **first.body,
        "event": "check_recovered",
        "run_id": "run-2",
        "status": "pass",
        "observed": 12,
    }


def test_email_says_what_failed_to_every_recipient(mail: MailServer) -> None:
    channel = SmtpEmail(
        "127.0.0.1", mail.port, "headwater@example.com", ["oncall@example.com", "data@example.com"]
    )
    channel.send(Alert(kind="failing", outcome=outcome()))

    [sent] = mail.mails
    assert sent.mail_from == "headwater@example.com"
    assert sent.rcpt_tos == ["oncall@example.com", "data@example.com"]
    assert sent.message["Subject"] == "[headwater] FAIL freshness on events"
    assert sent.message["From"] == "headwater@example.com"
    assert sent.message["To"] == "oncall@example.com, data@example.com"
    assert sent.message.get_content_type() == "text/plain"
    assert sent.message.get_content() == "\r\n".join(  # SMTP lines end in CRLF
        [
            "The check freshness on events failed.",
            "",
            "Observed:  7200",
            "Expected:  <= 3600",
            "Severity:  error",
            "Details:   newest event is 7200 s old",
            "Checked:   2026-05-01 12:00:00 UTC (run run-1)",
            "",
            "Reproduce: headwater check --only freshness",
            "",
        ]
    )


def test_recovery_email(mail: MailServer) -> None:
    channel = SmtpEmail("127.0.0.1", mail.port, "hw@example.com", ["oncall@example.com"])
    channel.send(Alert(kind="recovered", outcome=outcome("pass", observed=12.0)))

    [sent] = mail.mails
    assert sent.message["Subject"] == "[headwater] RECOVERED freshness on events"
    body = sent.message.get_content()
    assert body.startswith("The check freshness on events passes again.\r\n\r\nObserved:  12\r\n")


# ---------------------------------------------------------------- channel errors


@pytest.mark.parametrize(("status", "transient"), [(500, True), (429, True), (404, False)])
def test_an_error_answer_is_a_delivery_error(
    webhook: WebhookServer, status: int, transient: bool
) -> None:
    webhook.fail(1, status)
    with pytest.raises(AlertDeliveryError, match=f"answered {status}") as raised:
        JsonWebhook(webhook.url).send(Alert(kind="failing", outcome=outcome()))
    assert raised.value.transient is transient


@pytest.mark.parametrize(("reply", "transient"), [("451 try later", True), ("554 no", False)])
def test_an_smtp_refusal_is_a_delivery_error(mail: MailServer, reply: str, transient: bool) -> None:
    mail.reply = reply
    channel = SmtpEmail("127.0.0.1", mail.port, "hw@example.com", ["oncall@example.com"])
    with pytest.raises(AlertDeliveryError, match=f"SMTP {reply[:3]}") as raised:
        channel.send(Alert(kind="failing", outcome=outcome()))
    assert raised.value.transient is transient
    assert mail.mails == []


def test_an_unreachable_server_is_a_transient_delivery_error() -> None:
    port = free_port()  # nothing listens there
    alert = Alert(kind="failing", outcome=outcome())
    channels: list[AlertChannel] = [
        JsonWebhook(f"http://127.0.0.1:{port}/hook"),
        SlackWebhook(f"http://127.0.0.1:{port}/hook"),
        SmtpEmail("127.0.0.1", port, "hw@example.com", ["oncall@example.com"]),
    ]
    for channel in channels:
        with pytest.raises(AlertDeliveryError) as raised:
            channel.send(alert)
        assert raised.value.transient is True


def test_channels_keep_their_secrets_out_of_logs_and_check_their_settings() -> None:
    assert repr(SlackWebhook("https://hooks.slack.com/services/T0/B0/s3cret")) == (
        "SlackWebhook(hooks.slack.com)"
    )
    assert repr(JsonWebhook("https://alerts.example.com:8443/hook?token=s3cret")) == (
        "JsonWebhook(https://alerts.example.com:8443)"
    )
    with pytest.raises(ConfigError, match="Slack webhook URL must be an http"):
        SlackWebhook("hooks.slack.com/services/x")
    with pytest.raises(ConfigError, match="at least one recipient"):
        SmtpEmail("127.0.0.1", 25, "hw@example.com", [])
    with pytest.raises(ConfigError, match="rate_limit"):
        AlertDispatcher([], state=MemoryAlertState(), rate_limit=(0, 60.0))


# ---------------------------------------------------------------- when to alert


@pytest.mark.parametrize(
    ("last_alerted", "status", "kind"),
    [
        (None, "pass", None),  # first seen passing: nothing to say
        (None, "fail", "failing"),  # first seen failing
        (None, "warn", "failing"),
        ("pass", "fail", "failing"),
        ("fail", "fail", None),  # still failing: said already
        ("warn", "fail", "failing"),  # an escalation is a new failing state
        ("fail", "warn", "failing"),
        ("fail", "pass", "recovered"),
        ("warn", "pass", "recovered"),
        ("pass", "pass", None),
    ],
)
def test_a_check_alerts_when_its_state_changes(
    last_alerted: str | None, status: Status, kind: str | None
) -> None:
    alert = alert_for(last_alerted, outcome(status))
    assert (alert.kind if alert else None) == kind


def test_once_per_failing_state_and_a_recovery(webhook: WebhookServer) -> None:
    alerts = dispatcher([JsonWebhook(webhook.url)])
    runs: list[tuple[str, Status]] = [
        ("r1", "fail"),
        ("r2", "fail"),
        ("r3", "pass"),
        ("r4", "pass"),
        ("r5", "fail"),
    ]

    kinds = [
        [a.kind for a in alerts.dispatch([outcome(status, run_id=run)])] for run, status in runs
    ]

    assert kinds == [["failing"], [], ["recovered"], [], ["failing"]]
    assert [(b["event"], b["run_id"]) for b in webhook.delivered] == [
        ("check_failed", "r1"),
        ("check_recovered", "r3"),
        ("check_failed", "r5"),
    ]
    assert (alerts.counts.sent, alerts.counts.failed, alerts.counts.suppressed) == (3, 0, 0)


# ---------------------------------------------------------------- retries and failures


def test_a_transient_failure_is_retried_until_delivered(webhook: WebhookServer) -> None:
    webhook.fail(2, 500)
    alerts = dispatcher([JsonWebhook(webhook.url)], retries=3)

    sent = alerts.dispatch([outcome()])

    assert [a.kind for a in sent] == ["failing"]
    assert [p.status for p in webhook.posts] == [500, 500, 200]
    assert len(webhook.delivered) == 1
    assert (alerts.counts.sent, alerts.counts.failed) == (1, 0)


def test_a_permanent_failure_is_not_retried(webhook: WebhookServer) -> None:
    webhook.fail(1, 404)
    alerts = dispatcher([JsonWebhook(webhook.url)], retries=3)

    assert alerts.dispatch([outcome()]) == []
    assert [p.status for p in webhook.posts] == [404]


def test_a_failing_channel_is_logged_and_the_others_still_deliver(
    webhook: WebhookServer, slack: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.fail(100, 503)
    broken = JsonWebhook(webhook.url)
    alerts = dispatcher([broken, SlackWebhook(slack.url)], retries=2)

    with caplog.at_level(logging.WARNING, logger="headwater.modeler"):
        sent = alerts.dispatch([outcome()])

    assert [a.kind for a in sent] == ["failing"]
    assert [p.status for p in webhook.posts] == [503, 503, 503]
    assert len(slack.delivered) == 1
    assert (alerts.counts.sent, alerts.counts.failed) == (1, 1)
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "headwater.modeler",
            "ERROR",
            f"alert 'FAIL freshness on events' not delivered to {broken!r} after 3 attempt(s):"
            " answered 503: scripted failure",
        )
    ]


def test_an_alert_no_channel_took_is_tried_again_next_run(webhook: WebhookServer) -> None:
    state = MemoryAlertState()
    alerts = dispatcher([JsonWebhook(webhook.url)], state=state, retries=0)
    webhook.fail(1, 500)

    assert alerts.dispatch([outcome(run_id="r1")]) == []
    assert state.get("freshness") is None
    assert [a.kind for a in alerts.dispatch([outcome(run_id="r2")])] == ["failing"]
    assert state.get("freshness") == "fail"
    assert [b["run_id"] for b in webhook.delivered] == ["r2"]


class Broken:
    """A channel with a bug: it raises something other than AlertDeliveryError."""

    def send(self, alert: Alert) -> None:
        raise RuntimeError("bug in a channel")


def test_a_broken_channel_never_fails_the_run(
    slack: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = dispatcher([Broken(), SlackWebhook(slack.url)])

    with caplog.at_level(logging.ERROR, logger="headwater.modeler"):
        sent = alerts.dispatch([outcome()])

    assert [a.kind for a in sent] == ["failing"]
    assert len(slack.delivered) == 1
    [record] = caplog.records
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


# ---------------------------------------------------------------- rate limit


def test_the_rate_limit_holds_back_alerts_and_they_go_out_later(
    webhook: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    alerts = dispatcher([JsonWebhook(webhook.url)], rate_limit=(2, 60.0), clock=lambda: now[0])
    checks = [outcome(check=name) for name in ("freshness", "volume", "nulls")]

    with caplog.at_level(logging.WARNING, logger="headwater.modeler"):
        first = alerts.dispatch(checks)
        now[0] += 30
        second = alerts.dispatch(checks)  # still within the window: nulls is held back again
        now[0] += 30
        third = alerts.dispatch(checks)  # the first two left the window

    assert [a.outcome.check_name for a in first] == ["freshness", "volume"]
    assert second == []
    assert [a.outcome.check_name for a in third] == ["nulls"]
    assert [b["check_name"] for b in webhook.delivered] == ["freshness", "volume", "nulls"]
    assert (alerts.counts.sent, alerts.counts.suppressed) == (3, 2)
    assert [r.getMessage() for r in caplog.records] == 2 * [
        "alert suppressed by the rate limit (retried next run): FAIL nulls on events"
    ]


# ---------------------------------------------------------------- state


@pytest.fixture
def alert_db(clickhouse: ClickHouse) -> Iterator[ClickHouse]:
    database = f"hw_alerts_{uuid.uuid4().hex[:12]}"
    shared = clickhouse.sharing(database=database)
    shared.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    yield shared
    shared.command(f"DROP DATABASE IF EXISTS {database}")


def clickhouse_state(db: ClickHouse) -> ClickHouseAlertState:
    state = ClickHouseAlertState(db)
    state.create()
    return state


@pytest.fixture(params=["memory", "clickhouse"])
def state(request: pytest.FixtureRequest) -> AlertState:
    if request.param == "memory":
        return MemoryAlertState()
    return clickhouse_state(request.getfixturevalue("alert_db"))


def test_state_keeps_the_last_status_per_check(state: AlertState) -> None:
    assert state.get("freshness") is None
    state.set("freshness", "fail")
    state.set("volume", "warn")
    state.set("freshness", "pass")
    assert (state.get("freshness"), state.get("volume"), state.get("nulls")) == (
        "pass",
        "warn",
        None,
    )


def test_clickhouse_state_survives_a_new_dispatcher(
    alert_db: ClickHouse, webhook: WebhookServer
) -> None:
    first = dispatcher([JsonWebhook(webhook.url)], state=clickhouse_state(alert_db))
    assert [a.kind for a in first.dispatch([outcome(run_id="r1")])] == ["failing"]

    later = dispatcher([JsonWebhook(webhook.url)], state=clickhouse_state(alert_db))
    assert later.dispatch([outcome(run_id="r2")]) == []
    assert [a.kind for a in later.dispatch([outcome("pass", run_id="r3")])] == ["recovered"]

    assert [(b["event"], b["run_id"]) for b in webhook.delivered] == [
        ("check_failed", "r1"),
        ("check_recovered", "r3"),
    ]
    table = f"{alert_db.database}.alert_state"
    rows = alert_db.rows(f"SELECT check_name, status FROM {table} FINAL")  # noqa: S608
    assert rows == [("freshness", "pass")]


def test_an_unavailable_state_stops_alerts_without_failing_the_run(
    alert_db: ClickHouse, webhook: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    missing = ClickHouseAlertState(alert_db)  # its table was never created
    alerts = dispatcher([JsonWebhook(webhook.url)], state=missing)

    with caplog.at_level(logging.ERROR, logger="headwater.modeler"):
        assert alerts.dispatch([outcome()]) == []

    assert webhook.posts == []
    [record] = caplog.records
    assert record.getMessage().startswith(
        f"alerts stopped for this run: alert state in {alert_db.database}:"
    )
