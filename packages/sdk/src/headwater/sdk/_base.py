"""What `Client` and `AsyncClient` share: turning calls into encoded, queued events."""

from __future__ import annotations

import atexit
import logging
import os
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import msgspec

from ._errors import (
    ClientClosed,
    ConfigError,
    EventEncodingError,
    EventError,
    EventTooLarge,
    HeadwaterError,
    InvalidEvent,
    QueueFull,
    SpoolFull,
)
from ._event import Event
from ._ids import new_event_id, reseed_after_fork
from ._options import ClientOptions
from ._properties import find_unencodable, holds_non_finite, may_hold_non_finite
from ._queue import EventQueue
from ._spool import Spool
from ._stats import Counters, DropReason, Stats
from ._wire import Alias, AnyMessage, Identify, Message, Track, WireCodec

logger = logging.getLogger("headwater.sdk")

BeforeSend = Callable[[AnyMessage], AnyMessage | None]

MAX_NAME_LENGTH = 200
REFUSAL_LOG_INTERVAL = 10.0  # seconds between two "event not accepted" log lines


def utc(timestamp: datetime) -> datetime:
    """`timestamp` in UTC; a naive one is taken as local time, as Python does."""
    return timestamp.astimezone(UTC)


def _acceptable(value: object) -> bool:
    """The hot path's test of an event name or distinct_id; `check_message` says why not."""
    return type(value) is str and 0 < len(value) <= MAX_NAME_LENGTH and "\x00" not in value


def check_message(message: Message) -> None:
    """Raise `InvalidEvent` naming what is wrong with the envelope of `message`."""
    for field, value in (("distinct_id", message.distinct_id), ("event", message.event)):
        if type(value) is not str or not value:
            raise InvalidEvent(f"{field} must be a non-empty string, got {value!r}")
        if len(value) > MAX_NAME_LENGTH:
            raise InvalidEvent(f"{field} is {len(value)} characters, over {MAX_NAME_LENGTH}")
        if "\x00" in value:
            raise InvalidEvent(f"{field} contains a NUL character")


class ClientBase:
    """Event intake shared by the thread client and the asyncio client."""

    def __init__(
        self,
        write_key: str,
        *,
        host: str | None,
        options: ClientOptions | None,
        on_error: Callable[[Exception, list[AnyMessage]], object] | None,
        before_send: BeforeSend | None,
        disabled: bool,
        debug: bool,
    ) -> None:
        if not write_key and not disabled:
            raise ConfigError("write_key is empty: pass the project's write key")
        options = options or ClientOptions()
        if host is not None and host != options.host:
            options = msgspec.structs.replace(options, host=host)
        self.options = options
        self._write_key = write_key
        self._on_error = on_error
        self._before_send = before_send
        self.disabled = disabled
        self._closed = disabled  # a disabled client refuses every event from the start
        self.debug = debug
        self._codec = WireCodec(options.encoding, compress=options.gzip)
        self._encode_message = self._codec.encode_message
        self._json = options.encoding == "json"
        self._max_event_bytes = options.max_event_bytes
        self._counters = Counters()
        self._refusal_logged_at = -REFUSAL_LOG_INTERVAL
        self._queue = self._new_queue()
        self._spool: Spool | None = None
        _forked_children_reset.add(self)
        self._exit_hook = self._at_exit

    def _deliver_at_exit(self) -> None:
        """Called last by a subclass constructor, once the client is complete."""
        # A strong reference: a client nobody holds any more still delivers at exit.
        atexit.register(self._exit_hook)

    def _at_exit(self) -> None:
        """Deliver what is still queued when the interpreter exits, within shutdown_timeout."""
        raise NotImplementedError

    def _new_queue(self) -> EventQueue:
        o = self.options
        return EventQueue(
            max_events=o.max_queue_events,
            max_bytes=o.max_queue_bytes,
            batch_events=o.max_batch_events,
            batch_bytes=o.max_batch_bytes,
            policy=o.on_full,
            block_timeout=o.block_timeout,
            counters=self._counters,
        )

    def _open_spool(self) -> Spool | None:
        # A disabled client sends nothing: it must not take over what dead processes left.
        if self.options.spool_dir is None or self.disabled:
            return None
        return Spool(self.options, counters=self._counters)

    # -- the public calls ------------------------------------------------------

    def track(
        self,
        event: Event,
        *,
        distinct_id: str,
        timestamp: datetime | None = None,
        event_id: str | None = None,
    ) -> str | None:
        """Queue a typed event; returns its id, or None when it was not accepted."""
        # A typed event is a Struct that msgspec encodes as the properties object.
        properties = cast("dict[str, Any]", event)
        return self._emit(
            Track,
            event.__event_name__,
            distinct_id,
            properties,
            timestamp=timestamp,
            event_id=event_id,
        )

    def capture(
        self,
        event: str,
        *,
        distinct_id: str,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        event_id: str | None = None,
    ) -> str | None:
        """Queue an untyped event by name; returns its id, or None when it was not accepted."""
        props = dict(properties) if properties else {}
        return self._emit(Track, event, distinct_id, props, timestamp=timestamp, event_id=event_id)

    def identify(
        self,
        distinct_id: str,
        traits: Mapping[str, Any] | None = None,
        *,
        set_once: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        event_id: str | None = None,
    ) -> str | None:
        """Record a user's traits: an `$identify` event carrying them in `$set`."""
        props: dict[str, Any] = {"$set": dict(traits or {})}
        if set_once:
            props["$set_once"] = dict(set_once)
        return self._emit(
            Identify, "$identify", distinct_id, props, timestamp=timestamp, event_id=event_id
        )

    def alias(
        self,
        previous_id: str,
        distinct_id: str,
        *,
        timestamp: datetime | None = None,
        event_id: str | None = None,
    ) -> str | None:
        """Say that `previous_id` (e.g. an anonymous id) and `distinct_id` are one user."""
        props = {"alias": distinct_id}
        return self._emit(
            Alias, "$create_alias", previous_id, props, timestamp=timestamp, event_id=event_id
        )

    def stats(self) -> Stats:
        """A snapshot of the client's counters."""
        spool = self._spool
        return self._counters.snapshot(
            queued=len(self._queue),
            queued_bytes=self._queue.nbytes,
            spooled=len(spool) if spool is not None else 0,
            enqueued=self._queue.last_sequence + (spool.appended if spool is not None else 0),
        )

    # -- intake ----------------------------------------------------------------

    def _emit(
        self,
        kind: type[Message],
        name: str,
        distinct_id: str,
        properties: dict[str, Any],
        *,
        timestamp: datetime | None,
        event_id: str | None,
    ) -> str | None:
        if self._closed:
            reason: DropReason = "disabled" if self.disabled else "shutdown"
            self._refuse(ClientClosed("the client is shut down"), reason)
            return None
        try:
            message = kind(
                event_id=event_id or new_event_id(),
                event=name,
                distinct_id=distinct_id,
                timestamp=datetime.now(UTC) if timestamp is None else utc(timestamp),
                properties=properties,
            )
            data = self._encode(message)
        except EventError as exc:
            self._refuse(exc, "invalid")
            return None
        if data is None:
            return None
        try:
            accepted = self._enqueue(data)
        except SpoolFull as exc:
            self._refuse(exc, "spool_full")
            return None
        if not accepted:
            self._refuse(QueueFull(f"queue full, policy {self.options.on_full}"), None)
            return None
        return message.event_id

    def _encode(self, message: Message) -> bytes | None:
        if not (_acceptable(message.distinct_id) and _acceptable(message.event)):
            check_message(message)
        if self._before_send is not None:
            changed = self._before_send(cast(AnyMessage, message))
            if changed is None:
                self._counters.filter()
                return None
            message = changed
            check_message(message)
        try:
            data = self._encode_message(message)
        except (TypeError, ValueError, OverflowError) as exc:
            where = find_unencodable(message.properties, json=self._json)
            raise EventEncodingError(f"event {message.event!r}: {where or exc}") from exc
        if len(data) > self._max_event_bytes:
            raise EventTooLarge(
                f"event {message.event!r} is {len(data)} bytes encoded, "
                f"over max_event_bytes={self._max_event_bytes}"
            )
        # msgspec writes NaN and infinities as null in JSON: refuse rather than lose them.
        properties = message.properties
        if (
            self._json
            and may_hold_non_finite(properties)
            and b"null" in data
            and holds_non_finite(properties)
        ):
            where = find_unencodable(message.properties, json=True)
            raise EventEncodingError(f"event {message.event!r}: {where}")
        return data

    def _enqueue(self, data: bytes) -> bool:
        """Queue `data`, or write it to the spool; False when the queue's policy refused it."""
        spool = self._spool
        if spool is None:
            return self._queue.put(data)
        spool.append(data)  # on disk before the call returns; raises SpoolFull
        return True

    def _refuse(self, exc: HeadwaterError, reason: DropReason | None) -> None:
        if reason is not None:  # the queue counts its own overflow
            self._counters.drop(reason)
        self._counters.error(exc)
        if self.debug:
            raise exc
        # One line per refused event would flood the log in an outage: stats() counts each.
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL:
            self._refusal_logged_at = now
            logger.warning("event not accepted: %s (further refusals counted in stats())", exc)

    # -- fork ------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """A forked child starts with an empty queue and its own counters and connections."""
        self._counters = Counters()
        self._queue = self._new_queue()
        if self._spool is not None:
            self._spool.forget()  # the parent's: its files and locks stay the parent's
        self._spool = None


def _at_exit(ref: weakref.ref[ClientBase]) -> None:
    client = ref()
    if client is not None:
        client._at_exit()


# Clients alive in this process, so that a forked child can reset each of them.
_forked_children_reset: weakref.WeakSet[ClientBase] = weakref.WeakSet()


def _reset_after_fork() -> None:
    reseed_after_fork()
    for client in list(_forked_children_reset):
        client._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_after_fork)
