"""The SDK's exceptions, one root.

```
HeadwaterError
├── ConfigError            a client option is out of range
├── EventError             an event that can never be sent (the caller's mistake)
│   ├── InvalidEvent         an empty or too long name or distinct_id, a bad timestamp
│   ├── EventEncodingError   a property the wire format cannot carry
│   └── EventTooLarge        over the per-event byte limit
├── QueueFull              the queue is at its limit and the policy dropped the event
│   └── SpoolFull            the spool is at spool_max_bytes, or its disk refused the write
├── ClientClosed           the client was shut down
└── DeliveryError          a batch could not be delivered
    ├── TransportError       no HTTP answer: refused, reset, timed out (retried)
    ├── ServerError          408, 429 or 5xx after the last retry
    └── Rejected             a final 4xx, or events the gateway rejected one by one
```
"""

from __future__ import annotations


class HeadwaterError(Exception):
    """Root of every error the SDK raises or reports."""


class ConfigError(HeadwaterError, ValueError):
    """A client option has a value the client cannot work with."""


class EventError(HeadwaterError):
    """An event that can never be sent as it is."""


class InvalidEvent(EventError, ValueError):
    """A required field is empty, too long or malformed."""


class EventEncodingError(EventError, TypeError):
    """A property holds a value the wire format cannot represent."""


class EventTooLarge(EventError):
    """The encoded event is larger than `max_event_bytes`."""


class QueueFull(HeadwaterError):
    """The in-memory queue is full and the overflow policy refused the event."""


class SpoolFull(QueueFull):
    """The durable spool could not take the event: at `spool_max_bytes`, or the disk refused it."""


class ClientClosed(HeadwaterError):
    """The client was shut down and accepts no new events."""


class DeliveryError(HeadwaterError):
    """A batch could not be delivered to the gateway."""


class TransportError(DeliveryError):
    """The request got no HTTP answer (connection refused or reset, timeout)."""


class ServerError(DeliveryError):
    """The gateway answered 408, 429 or 5xx."""

    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"gateway answered {status}: {detail}")
        self.status = status
        self.retry_after = retry_after


class Rejected(DeliveryError):
    """The gateway refused the batch (a final 4xx) or some of its events."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"gateway rejected the events ({status}): {detail}")
        self.status = status


def is_retryable(exc: BaseException) -> bool:
    """Whether sending the same batch again may succeed."""
    return isinstance(exc, TransportError | ServerError)


def refuses_write_key(exc: BaseException) -> bool:
    """Whether the gateway refused the client's write key (401 or 403): every batch will fail."""
    return isinstance(exc, Rejected) and exc.status in (401, 403)


def counts_against_batch(exc: BaseException) -> bool:
    """Whether a failure says something about the batch rather than the gateway's availability.

    Connection errors, timeouts, 429 and 502/503/504 mean the gateway is away or busy: a
    durable spool keeps such batches however long the outage lasts. Other 5xx answers may be
    caused by the batch itself (a poison batch), so they count towards giving up on it.
    """
    if isinstance(exc, TransportError):
        return False
    if isinstance(exc, ServerError):
        return exc.status not in (408, 429, 502, 503, 504)
    return True
