"""Control characters from a request never reach a file path or a log line.

A request path holding one (``%00``, ``%0a`` ...) is refused with 400 before routing: no route or file of
ours has one, and the static-file lookup would fail on a NUL byte. Log messages escape control characters
(a newline written from request data would forge a line of ``api.log``); tracebacks keep their lines.
"""

from __future__ import annotations

import logging
import re

from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from .errors import send_error

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def escape_controls(text: str) -> str:
    """``a\\nb`` → ``a\\\\nb``: each control character as its Python escape."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class EscapingFormatter(logging.Formatter):
    """A formatter whose message part has its control characters escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class RefuseControlCharacters(ASGIMiddleware):
    """400 for a request whose (decoded) path holds a control character."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not _CONTROL.search(path):
            await next_app(scope, receive, send)
            return
        await send_error(send, 400, "bad_request",
                         f"the path holds a control character: {escape_controls(path)[:120]}")
