"""The gateway's exceptions, one root; the app's exception handlers map them to statuses.

```
GatewayError
├── ConfigError             a setting is missing or malformed (start-up stops)  -
├── RequestError            the request itself is wrong                           4xx
│   ├── Unauthorized          missing or unknown write key                       401
│   ├── BadPayload            a body that cannot be parsed                       400
│   ├── PayloadTooLarge       over the body limit, compressed or not             413
│   ├── UnsupportedMediaType  a content type or encoding we do not read          415
│   └── RequestTimeout        the body did not arrive in time                    408
└── Unavailable             we cannot store now; the client should retry         503
    ├── SinkUnavailable       ClickHouse refused or timed out past the deadline
    ├── DedupeUnavailable     Redis is down and the policy is to fail closed
    └── Overloaded            the in-flight queue is full
```
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises."""


class ConfigError(GatewayError, ValueError):
    """A setting is missing or malformed; the message names it."""


class RequestError(GatewayError):
    """The client sent something we cannot take; `status` is the HTTP answer."""

    status = 400


class Unauthorized(RequestError):
    status = 401


class BadPayload(RequestError):
    status = 400


class PayloadTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


class RequestTimeout(RequestError):
    status = 408


class Unavailable(GatewayError):
    """Nothing was acknowledged; the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SinkUnavailable(Unavailable):
    """ClickHouse did not take the rows within the deadline."""


class DedupeUnavailable(Unavailable):
    """Redis is unreachable and the gateway is configured to fail closed."""


class Overloaded(Unavailable):
    """Too many rows are already waiting for ClickHouse."""
