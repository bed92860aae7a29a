"""Admin token on mutating endpoints (and a check of a token without changing anything), and the refusal
to listen beyond loopback without one."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from typing_extensions import TypedDict
from litestar import Request, get
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from config.settings import Settings

from .errors import ApiError

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Unauthorized(ApiError):
    status = 401
    error = "unauthorized"


async def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """App-wide guard: with a token configured, POST/PUT/PATCH/DELETE need ``Bearer <token>``.

    A coroutine on purpose: Litestar runs a plain-function guard in its thread pool, which cost every
    request (``/health`` included) a round trip through a worker thread — two thread wake-ups that, on
    a busy machine, showed as milliseconds in the latency tail."""
    token: str | None = connection.app.state.ctx.settings.admin_token
    if not token or connection.scope.get("method") not in MUTATING:
        return
    if not _bearer_matches(connection, token):
        raise Unauthorized(
            "this endpoint changes the system: send 'Authorization: Bearer <UPS_ADMIN_TOKEN>'",
            headers={"WWW-Authenticate": 'Bearer realm="ups"'},
        )


def _bearer_matches(connection: ASGIConnection[Any, Any, Any, Any], token: str) -> bool:
    scheme, _, given = connection.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class TokenCheck(TypedDict):
    token_required: bool
    #: None when no token is required or none was sent
    token_accepted: bool | None


@get("/api/v1/auth/check", summary="Whether changes need the admin token, and whether the one sent is it")
async def check_token(request: Request[Any, Any, Any]) -> TokenCheck:
    """Lets a client (the console) tell a wrong token at once, without trying a change."""
    token: str | None = request.app.state.ctx.settings.admin_token
    sent = "authorization" in request.headers
    return {"token_required": bool(token), "token_accepted": (_bearer_matches(request, token) if token and sent else None)}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_bind(host: str, settings: Settings) -> None:
    """Raise ValueError when asked to listen beyond loopback without an admin token."""
    if not is_loopback(host) and not settings.admin_token:
        raise ValueError(
            f"refusing to listen on {host}: beyond loopback every mutating endpoint must be protected; "
            "set UPS_ADMIN_TOKEN or listen on 127.0.0.1"
        )
