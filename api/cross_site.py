"""Refuse what a web page of another site could make a browser send to a local install.

* Only allowed ``Host`` names are served (loopback names by default, ``UPS_ALLOWED_HOSTS`` more): a page
  whose DNS name is rebound to 127.0.0.1 sends its own name as the Host, so it can read nothing.
* A mutating request (POST, PUT, PATCH, DELETE) whose ``Origin`` is neither the server's own nor an allowed
  one (``UPS_ALLOWED_ORIGINS``, ``UPS_CORS_ORIGINS``) is refused: browsers send Origin on every
  cross-origin POST, ``fetch`` ``no-cors`` and form posts included, and tools such as curl send none.
* A mutating request with a body must say ``Content-Type: application/json``: the "simple" bodies a
  page can post cross-site without asking (text/plain, form encodings) are refused with 415.

A plain ASGI middleware rather than Litestar's ``AllowedHostsConfig``: that one matches the Host header
with its port (every port would have to be listed) and answers in its own error shape, not the API's.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from config.settings import Settings

from .errors import send_error

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON = "application/json"


def host_name(host: str) -> str:
    """``example.org:5000`` → ``example.org``, ``[::1]:5000`` → ``::1``, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") > 1:  # a bare IPv6 address
        return host
    return host.partition(":")[0]


@dataclass(frozen=True, slots=True)
class SitePolicy:
    """Which Host names are served and which Origins may change things."""

    hosts: frozenset[str]  # names without ports; "*" serves every name
    origins: frozenset[str]  # scheme://host[:port], as browsers send them

    @classmethod
    def of(cls, settings: Settings) -> "SitePolicy":
        hosts = {host_name(h) for h in settings.allowed_hosts}
        if settings.host not in ("0.0.0.0", "::", ""):
            hosts.add(host_name(settings.host))  # the address it was told to listen on
        origins = {o.rstrip("/").lower() for o in (*settings.allowed_origins, *settings.cors_origins)}
        return cls(frozenset(hosts), frozenset(origins))

    def host_allowed(self, host: str | None) -> bool:
        return host is not None and ("*" in self.hosts or host_name(host) in self.hosts)

    def origin_allowed(self, origin: str, host: str, scheme: str) -> bool:
        origin = origin.rstrip("/").lower()
        return origin == f"{scheme}://{host.strip().lower()}" or origin in self.origins or "*" in self.origins


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


class CrossSiteGuard(ASGIMiddleware):
    """Answers 400 (Host), 403 (Origin) or 415 (Content-Type) before any route runs."""

    def __init__(self, policy: SitePolicy) -> None:
        self.policy = policy

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope["type"] not in ("http", "websocket"):
            await next_app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await next_app(scope, receive, send)
            return
        await send_error(send, *refusal)

    def refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        headers = _headers(scope)
        host = headers.get("host")
        if not self.policy.host_allowed(host):
            shown = repr(host)[:80] if host is not None else "none"
            return (400, "bad_host", f"this server does not answer for Host {shown}; "
                    "allowed names are set by UPS_ALLOWED_HOSTS (loopback names by default)")
        if scope.get("method") not in MUTATING:
            return None
        origin = headers.get("origin")
        if origin is not None and not self.policy.origin_allowed(origin, host or "", str(scope.get("scheme", "http"))):
            return (403, "forbidden_origin", f"changes from a page of {origin[:80]!r} are refused: only this "
                    "server's own pages and UPS_ALLOWED_ORIGINS may change the system")
        media = headers.get("content-type", "").partition(";")[0].strip().lower()
        has_body = headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in headers
        if (has_body or media) and media != JSON:
            return (415, "unsupported_media_type",
                    f"a request that changes the system must send {JSON}, not {media or 'no Content-Type'}")
        return None
