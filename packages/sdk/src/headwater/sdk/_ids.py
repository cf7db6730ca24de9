"""Event ids: UUIDv7, time-ordered, generated on the client."""

from __future__ import annotations

import uuid_utils


def new_event_id() -> str:
    """A fresh UUIDv7 as text (monotonic within a process)."""
    return str(uuid_utils.uuid7())


def reseed_after_fork() -> None:
    """Give a forked child its own random state so that its ids never repeat the parent's."""
    uuid_utils.reseed_rng()
