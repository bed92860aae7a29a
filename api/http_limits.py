"""HTTP server limits against slow and half-open clients.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but a connection that never
completes a request head (opened and left silent, or fed a header byte at a time) is kept for ever: a few
hundred of them hold sockets and file descriptors until the process runs out. :func:`protocol_class`
gives uvicorn's httptools protocol a deadline for each request head: from the connection (or the end
of the previous response) to the end of the head's headers; past it the connection is closed. A head
that grows past ``head_bytes`` without ending is refused (400) and the connection closed: its headers
would otherwise pile up in memory at the client's pace until the deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from config.settings import Settings


class _HeadDeadlineProtocol(HttpToolsProtocol):
    head_timeout: float = 10.0
    head_bytes: int = 65_536
    _head_timer: asyncio.TimerHandle | None = None
    _head_received = 0

    def _arm(self) -> None:
        self._disarm()
        self._head_received = 0
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is not None:  # the head is still not complete after this data
            self._head_received += len(data)
            if self._head_received > self.head_bytes and not self.transport.is_closing():
                self._disarm()
                self.send_400_response(f"request head larger than {self.head_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._arm()  # waiting for the next request head

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol_class(head_timeout: float, head_bytes: int = 65_536) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` protocol with a request-head deadline of ``head_timeout`` seconds and a head
    size bound of ``head_bytes``."""
    return type("HeadDeadlineProtocol", (_HeadDeadlineProtocol,), {"head_timeout": head_timeout,
                                                                   "head_bytes": head_bytes})


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config arguments that bound what slow clients can hold."""
    return {
        "http": protocol_class(settings.http_head_timeout),
        "timeout_keep_alive": settings.http_keep_alive_timeout,
        # more open connections than this are answered 503 at once (each costs a socket and memory)
        "limit_concurrency": settings.http_max_connections,
    }
