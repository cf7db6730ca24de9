"""How a batch reaches the gateway: a one-method Protocol and its httpx implementations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

import httpx

from ._errors import TransportError


class Response(NamedTuple):
    """What the gateway answered."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    """Sends one request body; raises `TransportError` when no HTTP answer comes."""

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response: ...

    def close(self) -> None: ...


class AsyncTransport(Protocol):
    """The asyncio twin of `Transport`."""

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response: ...

    async def aclose(self) -> None: ...


class HttpTransport:
    """`Transport` over a keep-alive httpx connection pool."""

    def __init__(self, *, timeout: float) -> None:
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        try:
            answer = self._client.post(url, content=body, headers=dict(headers))
        except httpx.HTTPError as exc:
            raise TransportError(f"POST {url} failed: {exc!r}") from exc
        return Response(answer.status_code, answer.headers, answer.content)

    def close(self) -> None:
        self._client.close()


class AsyncHttpTransport:
    """`AsyncTransport` over an httpx.AsyncClient."""

    def __init__(self, *, timeout: float) -> None:
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        try:
            answer = await self._client.post(url, content=body, headers=dict(headers))
        except httpx.HTTPError as exc:
            raise TransportError(f"POST {url} failed: {exc!r}") from exc
        return Response(answer.status_code, answer.headers, answer.content)

    async def aclose(self) -> None:
        await self._client.aclose()
