"""PostHog's feature flags (`/flags`, `/decide`) for senders pointed at the gateway.

posthog-js asks for flags when it starts, and posthog-python and posthog-node when a
flag is read. With PostHog configured (`HEADWATER_POSTHOG_HOST` and `_API_KEY`, where
events are forwarded), the request goes on to PostHog under its project key, so the
flags a site reads are PostHog's for the same users. Without it, every flag is off.
Flags never touch ingestion: a PostHog that is slow or down answers "no flags, with
errors" after `timeout` seconds, which the SDKs take as "keep what you had".
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import msgspec

from ._errors import BadPayload

logger = logging.getLogger("headwater.gateway")

FLAGS_PATHS = [f"{base}{slash}" for base in ("/flags", "/decide") for slash in ("", "/")]

# No flag is on. Both shapes, for every SDK version: `flags` (`/flags`), and
# `featureFlags` with its payloads (`/decide`, older SDKs).
NO_FLAGS: dict[str, Any] = {
    "flags": {},
    "featureFlags": {},
    "featureFlagPayloads": {},
    "errorsWhileComputingFlags": False,
}
KEY_FIELDS = ("api_key", "token", "$token")

_json = msgspec.json.Decoder()
_encode = msgspec.json.Encoder()


class FlagsRequest(msgspec.Struct, kw_only=True):
    """A flags request: its JSON object and the write key it names."""

    document: dict[str, Any]
    key: str | None


def parse_flags(text: bytes) -> FlagsRequest:
    try:
        document = _json.decode(text)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadPayload(f"body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadPayload("a flags request must be a JSON object")
    named = (document.get(field) for field in KEY_FIELDS)
    return FlagsRequest(
        document=document, key=next((k for k in named if isinstance(k, str) and k), None)
    )


class FlagsProxy:
    """Asks PostHog at `host`, under `api_key`, what a flags request asked the gateway."""

    def __init__(self, host: str, api_key: str, *, timeout: float = 3.0) -> None:
        self._host = host.rstrip("/")
        self._api_key = api_key
        self._client = httpx.AsyncClient(timeout=timeout)

    async def ask(self, path: str, query: str, request: FlagsRequest) -> tuple[int, bytes]:
        """(status, JSON body) of PostHog's answer; "no flags, with errors" when it fails."""
        document = {
            **request.document,
            **{field: self._api_key for field in KEY_FIELDS if field in request.document},
        }
        url = f"{self._host}{path}" + (f"?{query}" if query else "")
        try:
            answer = await self._client.post(
                url, content=_encode.encode(document), headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            logger.warning("PostHog flags request failed: %s", type(exc).__name__)
            return 200, _encode.encode({**NO_FLAGS, "errorsWhileComputingFlags": True})
        if answer.status_code >= 500:
            logger.warning("PostHog answered a flags request with %d", answer.status_code)
            return 200, _encode.encode({**NO_FLAGS, "errorsWhileComputingFlags": True})
        return answer.status_code, answer.content

    async def close(self) -> None:
        await self._client.aclose()
