"""PostHog's feature flags (`/flags`, `/decide`) for senders pointed at the gateway.

posthog-js asks for flags when it starts, and posthog-python and posthog-node when a
flag is read. When the write key's project forwards its events to PostHog
(`HEADWATER_POSTHOG_HOST` and `_API_KEY`, or its own `HEADWATER_POSTHOG_PROJECTS`), the
request goes on to that PostHog under its project key, so the flags a site reads are
PostHog's for the same users. Otherwise every flag is off.
Flags never touch ingestion: a PostHog that is slow or down answers "no flags, with
errors" after `timeout` seconds, which the SDKs take as "keep what you had".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import httpx
import msgspec

from ._body import decode_json
from ._errors import BadPayload
from ._posthog import KEY_FIELDS
from ._settings import PostHogTarget

logger = logging.getLogger("headwater.gateway")

FLAGS_PATHS = [f"{base}{slash}" for base in ("/flags", "/decide") for slash in ("", "/")]

_encode = msgspec.json.Encoder()

# The gateway's own answers: no flag is on, in both shapes, for every SDK version: `flags`
# (`/flags`), and `featureFlags` with its payloads (`/decide`, older SDKs). With errors:
# PostHog had no answer, and the SDKs keep the flags they had.
_NONE: dict[str, Any] = {"flags": {}, "featureFlags": {}, "featureFlagPayloads": {}}
NO_FLAGS = _encode.encode({**_NONE, "errorsWhileComputingFlags": False})
NO_FLAGS_WITH_ERRORS = _encode.encode({**_NONE, "errorsWhileComputingFlags": True})


class FlagsRequest(msgspec.Struct, kw_only=True):
    """A flags request: its JSON object and the write key it names."""

    document: dict[str, Any]
    key: str | None


def parse_flags(text: bytes) -> FlagsRequest:
    document = decode_json(text)
    if not isinstance(document, dict):
        raise BadPayload("a flags request must be a JSON object")
    named = (document.get(field) for field in KEY_FIELDS)
    return FlagsRequest(
        document=document, key=next((k for k in named if isinstance(k, str) and k), None)
    )


class FlagsProxy:
    """Asks a project's PostHog, under its API key, what a flags request asked the gateway.

    PostHog gets the request's JSON as plain JSON, with PostHog's key in place of the
    gateway's wherever the request named it, and the request's query without what only
    the gateway read (`compression`, `data`, keys). Only a 200 within `timeout` seconds
    (in all) is passed on; for anything else `ask` has no answer.
    """

    def __init__(self, *, timeout: float = 3.0) -> None:
        self._timeout = timeout
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def ask(
        self,
        posthog: PostHogTarget,
        path: str,
        query: Sequence[tuple[str, str]],
        request: FlagsRequest,
        *,
        client_ip: str | None,
    ) -> bytes | None:
        """PostHog's JSON answer; None when there is none (`NO_FLAGS_WITH_ERRORS`)."""
        document = {
            **request.document,
            **{field: posthog.api_key for field in KEY_FIELDS if field in request.document},
        }
        kept = tuple((name, value) for name, value in query if name not in _GATEWAY_PARAMETERS)
        headers = {"Content-Type": "application/json"}
        if client_ip:  # PostHog's GeoIP targeting: the user's address, not the gateway's
            headers["X-Forwarded-For"] = client_ip
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self._client.post(
                    posthog.host.rstrip("/") + path,
                    params=kept,
                    content=_encode.encode(document),
                    headers=headers,
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            logger.warning("PostHog flags request failed: %s", type(exc).__name__)
            return None
        if answer.status_code != 200 or len(answer.content) > MAX_ANSWER_BYTES:
            logger.warning(
                "PostHog answered a flags request with %d (%d bytes)",
                answer.status_code,
                len(answer.content),
            )
            return None
        return answer.content

    async def close(self) -> None:
        await self._client.aclose()


# What the gateway read and PostHog must not see: how the body was wrapped (PostHog gets
# plain JSON) and the gateway's write key.
_GATEWAY_PARAMETERS = frozenset({"compression", "data", *KEY_FIELDS})
MAX_ANSWER_BYTES = 5_000_000
