"""HTTP/1.1 spoken byte by byte over a socket: requests no HTTP client would send (a
lying Content-Length, a body dribbled a byte at a time, a flood of headers)."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RawResponse:
    """One HTTP response as it came over the wire."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """One TCP connection to a server on loopback; every wait bounded by `timeout`."""

    def __init__(self, url: str, *, timeout: float = 20.0) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self._received = b""

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answered(self) -> bool:
        """Whether the server has sent anything (or closed) yet, without waiting."""
        self.sock.setblocking(False)
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return bool(self._received)
        finally:
            self.sock.setblocking(True)
        self._received += chunk
        return True

    def response(self) -> RawResponse:
        """The next response (its body by Content-Length)."""
        while b"\r\n\r\n" not in self._received:
            self._more()
        head, _, rest = self._received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.lower(): value for name, _, value in (line.partition(": ") for line in lines)
        }
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            self._received = head + b"\r\n\r\n" + rest
            self._more()
            rest = self._received.partition(b"\r\n\r\n")[2]
        self._received = rest[length:]
        return RawResponse(int(status_line.split()[1]), headers, rest[:length])

    def closed_by_server(self) -> bool:
        """Whether the server closes the connection (read until it does, or the timeout)."""
        try:
            while chunk := self.sock.recv(65536):
                self._received += chunk
        except TimeoutError:
            return False
        return True

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server after {self._received!r}")
        self._received += chunk


def request_head(path: str, *headers: tuple[str, str], length: int | None = None) -> bytes:
    """A POST's request line and headers (and Content-Length when given)."""
    lines = [f"POST {path} HTTP/1.1", "Host: gateway"]
    lines += [f"{name}: {value}" for name, value in headers]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
