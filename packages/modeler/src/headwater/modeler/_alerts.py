"""Alerts on data-quality checks: Slack, a JSON webhook or email, once per failing state.

A check alerts when its status differs from the last status it alerted with:

- `failing` when it turns `warn` or `fail` (from `pass`, from never seen, or from the
  other failing status: `warn` → `fail` is an escalation worth a message);
- `recovered` when it is back to `pass` after a failing alert;
- nothing while it stays where it was, and nothing for a check first seen passing.

The last alerted status lives in an `AlertState` (`MemoryAlertState` in a process,
`ClickHouseAlertState` across runs and hosts). It moves only when an alert reached at
least one channel, so an alert that no channel took, or that the rate limit held back,
is tried again at the next run while the check is still in that state (and is dropped,
rightly, if the check went back in the meantime).

Each alert goes to every channel with retries (exponential backoff, bounded) when the
error is transient. A channel that still fails is logged on the `headwater.modeler`
logger and counted in `AlertDispatcher.counts`; delivery never raises, so it never fails
a run. The rate limit is a sliding window kept by the dispatcher (per process).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Literal, Protocol

import httpx
import msgspec
from clickhouse_connect.driver.exceptions import ClickHouseError

from ._clickhouse import ClickHouse
from ._errors import ConfigError, ModelerError, WarehouseUnavailable

logger = logging.getLogger("headwater.modeler")

Status = Literal["pass", "warn", "fail"]


class AlertDeliveryError(ModelerError):
    """A channel did not take an alert; `transient` says whether trying again may help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class CheckOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One check's result in one run (a `dq_results` row, plus how to reproduce it)."""

    run_id: str
    check_name: str
    table_name: str
    severity: Literal["warn", "error"]
    status: Status
    observed: float | None
    threshold: str
    details: str
    checked_at: datetime  # UTC
    reproduce: str  # a command that runs the check again, e.g. `headwater check --only x`


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """What a channel sends: a check turned failing, or recovered."""

    kind: Literal["failing", "recovered"]
    outcome: CheckOutcome


# The JSON webhook's body: `event`, then every CheckOutcome field, `checked_at` in RFC 3339.
#   {"event": "check_failed" | "check_recovered", "run_id": ..., "check_name": ...,
#    "table_name": ..., "severity": ..., "status": ..., "observed": 7200.0 | null,
#    "threshold": ..., "details": ..., "checked_at": "2026-05-01T12:00:00Z", "reproduce": ...}
class CheckFailed(CheckOutcome, frozen=True, tag="check_failed", tag_field="event"):
    """JSON webhook body: a check turned `warn` or `fail`."""


class CheckRecovered(CheckOutcome, frozen=True, tag="check_recovered", tag_field="event"):
    """JSON webhook body: a check passes again."""


# Slack Block Kit, the few elements an alert uses.
class PlainText(msgspec.Struct, frozen=True, tag="plain_text", tag_field="type"):
    text: str


class Markdown(msgspec.Struct, frozen=True, tag="mrkdwn", tag_field="type"):
    text: str


class HeaderBlock(msgspec.Struct, frozen=True, tag="header", tag_field="type"):
    text: PlainText


class SectionBlock(msgspec.Struct, frozen=True, tag="section", tag_field="type"):
    text: Markdown
    fields: list[Markdown]


class ContextBlock(msgspec.Struct, frozen=True, tag="context", tag_field="type"):
    elements: list[Markdown]


class SlackMessage(msgspec.Struct, frozen=True):
    text: str  # the notification's fallback
    blocks: list[HeaderBlock | SectionBlock | ContextBlock]


_encode = msgspec.json.Encoder().encode


class AlertChannel(Protocol):
    def send(self, alert: Alert) -> None:
        """Deliver `alert`, or raise `AlertDeliveryError`."""


class AlertState(Protocol):
    def get(self, check_name: str) -> str | None:
        """The status `check_name` last alerted with (None: never)."""

    def set(self, check_name: str, status: str) -> None:
        """Remember that `check_name` alerted with `status`."""


# ---------------------------------------------------------------- what an alert says


def label(alert: Alert) -> str:
    """FAIL, WARN or RECOVERED."""
    return "RECOVERED" if alert.kind == "recovered" else alert.outcome.status.upper()


def headline(alert: Alert) -> str:
    """E.g. `FAIL freshness on events`."""
    return f"{label(alert)} {alert.outcome.check_name} on {alert.outcome.table_name}"


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _when(moment: datetime) -> str:
    return f"{_utc(moment):%Y-%m-%d %H:%M:%S} UTC"


def _escape(text: str) -> str:
    """Slack reads `<...>` as a link or mention: its text escapes &, < and >."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- channels


def _http_url(url: str, what: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{what}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"{what} must be an http(s) URL")
    return parsed


def _post_json(url: httpx.URL, body: bytes, headers: Mapping[str, str], timeout: float) -> None:
    """POST `body`; an error answer or a network failure raises `AlertDeliveryError`."""
    try:
        response = httpx.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:  # refused, timed out, broken connection
        raise AlertDeliveryError(f"{type(exc).__name__}: {exc}", transient=True) from exc
    status = response.status_code
    if status >= 300:
        raise AlertDeliveryError(
            f"answered {status}: {response.text[:200]}",
            transient=status >= 500 or status in (408, 429),
        )


class SlackWebhook:
    """A Slack incoming webhook; the message is Block Kit with a plain-text fallback.

    Header `:red_circle: FAIL freshness`, a section with the details and the fields
    Table / Observed / Expected / Severity, a context with the command to reproduce.
    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self._url = _http_url(url, "Slack webhook URL")
        self._timeout = timeout

    def __repr__(self) -> str:  # the path is the secret
        return f"SlackWebhook({self._url.host})"

    def send(self, alert: Alert) -> None:
        _post_json(self._url, _encode(slack_message(alert)), {}, self._timeout)


_EMOJI = {"fail": ":red_circle:", "warn": ":warning:", "pass": ":white_check_mark:"}


def slack_message(alert: Alert) -> SlackMessage:
    """The Block Kit message for `alert` (its mrkdwn and fallback text escaped)."""
    outcome = alert.outcome
    observed, expected = _number(outcome.observed), _escape(outcome.threshold)
    emoji = _EMOJI[outcome.status] if alert.kind == "failing" else _EMOJI["pass"]
    fields = {
        "Table": outcome.table_name,
        "Observed": observed,
        "Expected": expected,
        "Severity": outcome.severity,
    }
    return SlackMessage(
        text=f"{_escape(headline(alert))}: observed {observed}, expected {expected}",
        blocks=[
            HeaderBlock(PlainText(_clip(f"{emoji} {label(alert)} {outcome.check_name}", 150))),
            SectionBlock(
                Markdown(_clip(_escape(outcome.details) or "no details", 3000)),
                [Markdown(_clip(f"*{name}*\n{value}", 2000)) for name, value in fields.items()],
            ),
            ContextBlock(
                [
                    Markdown(f"Reproduce: `{_escape(outcome.reproduce)}`"),
                    Markdown(f"Run {_escape(outcome.run_id)}, checked {_when(outcome.checked_at)}"),
                ]
            ),
        ],
    )


class JsonWebhook:
    """POSTs `CheckFailed` / `CheckRecovered` as JSON, with `headers` (e.g. a token)."""

    def __init__(
        self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> None:
        self._url = _http_url(url, "JSON webhook URL")
        self._headers = dict(headers or {})
        self._timeout = timeout

    def __repr__(self) -> str:  # no path, query or headers: they may hold tokens
        return f"JsonWebhook({self._url.scheme}://{self._url.netloc.decode()})"

    def send(self, alert: Alert) -> None:
        _post_json(self._url, _encode(webhook_body(alert)), self._headers, self._timeout)


def webhook_body(alert: Alert) -> CheckFailed | CheckRecovered:
    """The JSON webhook's body for `alert`."""
    kind = CheckRecovered if alert.kind == "recovered" else CheckFailed
    fields = msgspec.structs.asdict(alert.outcome)
    return kind(**{**fields, "checked_at": _utc(alert.outcome.checked_at)})


class SmtpEmail:
    """A plain-text email through an SMTP server (STARTTLS and login when configured)."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        *,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not recipients:
            raise ConfigError("alert email needs at least one recipient")
        self._host, self._port, self._sender = host, port, sender
        self._recipients = list(recipients)
        self._starttls, self._username, self._password = starttls, username, password
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"SmtpEmail({self._host}:{self._port} to {', '.join(self._recipients)})"

    def send(self, alert: Alert) -> None:
        message = email_message(alert, sender=self._sender, recipients=self._recipients)
        try:
            refused = self._submit(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise _smtp_error(exc) from exc
        if refused:
            raise AlertDeliveryError(f"recipients refused: {sorted(refused)}", transient=False)

    def _submit(self, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
            if self._starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self._username is not None:
                smtp.login(self._username, self._password or "")
            return smtp.send_message(message, self._sender, self._recipients)


def _smtp_error(exc: smtplib.SMTPException | OSError) -> AlertDeliveryError:
    """4xx answers and network failures are worth another try; 5xx answers are not."""
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
        return AlertDeliveryError(f"SMTP {exc.smtp_code}: {text}", transient=exc.smtp_code < 500)
    permanent = (smtplib.SMTPRecipientsRefused, smtplib.SMTPNotSupportedError)
    return AlertDeliveryError(
        f"SMTP {type(exc).__name__}: {exc}", transient=not isinstance(exc, permanent)
    )


_VERBS = {"fail": "failed", "warn": "warns", "pass": "passes"}


def email_message(alert: Alert, *, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """Subject `[headwater] FAIL freshness on events`; the body says what, where, how much."""
    outcome = alert.outcome
    message = EmailMessage()
    message["Subject"] = f"[headwater] {headline(alert)}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    verb = "passes again" if alert.kind == "recovered" else _VERBS[outcome.status]
    opening = f"The check {outcome.check_name} on {outcome.table_name} {verb}."
    message.set_content(
        f"{opening}\n\n"
        f"Observed:  {_number(outcome.observed)}\n"
        f"Expected:  {outcome.threshold}\n"
        f"Severity:  {outcome.severity}\n"
        f"Details:   {outcome.details}\n"
        f"Checked:   {_when(outcome.checked_at)} (run {outcome.run_id})\n\n"
        f"Reproduce: {outcome.reproduce}\n"
    )
    return message


# ---------------------------------------------------------------- state


class MemoryAlertState:
    """The last alerted status per check, for one process (embedded mode, tests)."""

    def __init__(self) -> None:
        self._statuses: dict[str, str] = {}

    def get(self, check_name: str) -> str | None:
        return self._statuses.get(check_name)

    def set(self, check_name: str, status: str) -> None:
        self._statuses[check_name] = status


ALERT_STATE = """
CREATE TABLE IF NOT EXISTS {db}.alert_state (
    check_name String,
    status LowCardinality(String),
    updated_at DateTime64(6, 'UTC') DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(updated_at) ORDER BY check_name
"""


class ClickHouseAlertState:
    """The last alerted status per check in `alert_state`, kept across runs and hosts.

    Call `create()` once (it is idempotent) before the first `get`.
    """

    def __init__(self, clickhouse: ClickHouse) -> None:
        self._ch = clickhouse
        self._db = clickhouse.database

    def create(self) -> None:
        with self._reachable():
            self._ch.command(ALERT_STATE.format(db=self._db))

    def get(self, check_name: str) -> str | None:
        with self._reachable():
            found = self._ch.rows(
                f"SELECT status FROM {self._db}.alert_state FINAL"  # noqa: S608
                " WHERE check_name = %(check)s",
                {"check": check_name},
            )
        return str(found[0][0]) if found else None

    def set(self, check_name: str, status: str) -> None:
        with self._reachable():
            self._ch.command(
                f"INSERT INTO {self._db}.alert_state (check_name, status)"  # noqa: S608
                " VALUES (%(check)s, %(status)s)",
                {"check": check_name, "status": status},
            )

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except ClickHouseError as exc:
            raise WarehouseUnavailable(f"alert state in {self._db}: {exc}") from exc


# ---------------------------------------------------------------- dispatching


def alert_for(last_alerted: str | None, outcome: CheckOutcome) -> Alert | None:
    """The alert `outcome` calls for, given the status its check last alerted with."""
    if outcome.status == last_alerted:
        return None
    if outcome.status == "pass":
        return None if last_alerted is None else Alert(kind="recovered", outcome=outcome)
    return Alert(kind="failing", outcome=outcome)


@dataclass
class AlertCounts:
    """Since the dispatcher was made: alerts sent, deliveries lost, alerts held back."""

    sent: int = 0
    failed: int = 0  # (alert, channel) deliveries that failed after their retries
    suppressed: int = 0  # alerts over the rate limit


class RateLimit:
    """At most `max_alerts` in any `per_seconds` (a sliding window)."""

    def __init__(self, max_alerts: int, per_seconds: float, clock: Callable[[], float]) -> None:
        if max_alerts < 1 or per_seconds <= 0:
            raise ConfigError("alert rate_limit needs max_alerts >= 1 and per_seconds > 0")
        self._max, self._per, self._clock = max_alerts, per_seconds, clock
        self._sent: deque[float] = deque()

    def admit(self) -> bool:
        now = self._clock()
        while self._sent and self._sent[0] <= now - self._per:
            self._sent.popleft()
        if len(self._sent) >= self._max:
            return False
        self._sent.append(now)
        return True


class AlertDispatcher:
    """Decides which outcomes alert and delivers them; never raises for a delivery.

    `retries` more attempts follow a transient failure, `backoff` seconds after the first,
    doubling up to `max_backoff`. `rate_limit` is (max alerts, per seconds).
    """

    def __init__(
        self,
        channels: Sequence[AlertChannel],
        *,
        state: AlertState,
        retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        rate_limit: tuple[int, float] = (20, 3600.0),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if retries < 0 or backoff < 0 or max_backoff < 0:
            raise ConfigError("alert retries and backoff must not be negative")
        self._channels = list(channels)
        self._state = state
        self._retries, self._backoff, self._max_backoff = retries, backoff, max_backoff
        self._limit = RateLimit(*rate_limit, clock=clock)
        self.counts = AlertCounts()

    def dispatch(self, outcomes: Sequence[CheckOutcome]) -> list[Alert]:
        """Alert on what changed; the alerts that reached at least one channel."""
        sent: list[Alert] = []
        try:
            for outcome in outcomes:
                alert = alert_for(self._state.get(outcome.check_name), outcome)
                if alert is not None and self._admit(alert) and self._deliver(alert):
                    self._state.set(outcome.check_name, outcome.status)
                    sent.append(alert)
        except WarehouseUnavailable as exc:  # the state's store; the run goes on without alerts
            logger.error("alerts stopped for this run: %s", exc)  # noqa: TRY400
        return sent

    def _admit(self, alert: Alert) -> bool:
        if self._limit.admit():
            return True
        self.counts.suppressed += 1
        logger.warning("alert suppressed by the rate limit (retried next run): %s", headline(alert))
        return False

    def _deliver(self, alert: Alert) -> bool:
        """Send to every channel; True when one took it (or there is no channel)."""
        failures = sum(not self._send(channel, alert) for channel in self._channels)
        self.counts.failed += failures
        if failures < len(self._channels) or not self._channels:
            self.counts.sent += 1
            return True
        return False

    def _send(self, channel: AlertChannel, alert: Alert) -> bool:
        for attempt in range(self._retries + 1):
            if attempt:
                time.sleep(min(self._backoff * 2 ** (attempt - 1), self._max_backoff))
            try:
                channel.send(alert)
            except AlertDeliveryError as exc:
                if not exc.transient or attempt == self._retries:
                    logger.error(  # noqa: TRY400 - an expected refusal, no traceback
                        "alert %r not delivered to %r after %d attempt(s): %s",
                        headline(alert),
                        channel,
                        attempt + 1,
                        exc,
                    )
                    return False
            except Exception:  # a broken channel must not fail the run (logged with its traceback)
                logger.exception("alert %r not delivered to %r", headline(alert), channel)
                return False
            else:
                return True
        return False
