"""Errors are always JSON: ``{"status", "error", "message", "details": [{"field", "problem"}]}``.

Our own failures raise :class:`ApiError`; Litestar's (unknown route, bad body, body too large, …)
and scoring's (unknown user, duplicate rule, …) are mapped to the same shape. Anything unexpected is
logged with its traceback and answered with a JSON 500 that reveals nothing of the internals.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.openapi.datastructures import ResponseSpec
from litestar.exceptions import HTTPException, ValidationException
from litestar.utils.scope.state import ScopeState
from pydantic import BaseModel, Field, ValidationError

from storage import is_transient, unwritable_reason
from storage.errors import BackendError

log = logging.getLogger("ups.api")

#: what a client is told to wait while the store cannot be reached (seconds)
_RETRY_S = 2


class ErrorDetail(BaseModel):
    field: str = Field(description="dotted location of the offending value, e.g. 'body.weight'")
    problem: str


class ErrorBody(BaseModel):
    status: int = Field(ge=400, le=599)
    error: str = Field(description="machine-readable kind: not_found, conflict, invalid, unavailable, …")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ApiError(Exception):
    status = 400
    error = "bad_request"

    def __init__(self, message: str, details: list[ErrorDetail] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers


    @classmethod
    def of(cls, status: int, error: str, message: str) -> "ApiError":
        """An error whose status is known only at run time (e.g. mapped from another process)."""
        err = cls(message)
        err.status, err.error = status, error
        return err


class NotFound(ApiError):
    status = 404
    error = "not_found"


class Conflict(ApiError):
    status = 409
    error = "conflict"


class Invalid(ApiError):
    status = 422
    error = "invalid"

    @classmethod
    def field(cls, field: str, problem: str) -> "Invalid":
        return cls(f"{field}: {problem}", [ErrorDetail(field=field, problem=problem)])


class Unavailable(ApiError):
    status = 503
    error = "unavailable"


def _json(status: int, error: str, message: str, details: list[ErrorDetail] | None = None,
          headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    body = ErrorBody(status=status, error=error, message=message, details=details or [])
    return Response(body.model_dump(), status_code=status, headers=headers, media_type="application/json")


async def send_error(send: Any, status: int, error: str, message: str) -> None:
    """Answer with an error body straight from an ASGI middleware (before any route or handler runs)."""
    body = ErrorBody(status=status, error=error, message=message).model_dump_json().encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def on_recursion(request: Request[Any, Any, Any], exc: RecursionError) -> Response[dict[str, Any]]:
    """msgspec gives up on a deeply nested body with a RecursionError: the client's fault, not ours."""
    if "deserializ" in str(exc):
        return _json(400, "bad_request", "the JSON body is nested too deeply to read")
    return on_unexpected(request, exc)


def on_database(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """A store that cannot be written (read-only file, full disk) or reached (PostgreSQL down or
    restarting) is a 503 that names the cause, and the next request tries again on fresh connections; any
    other database error is unexpected."""
    reason = unwritable_reason(exc)
    if reason is None:
        return on_unexpected(request, exc)
    ctx = request.app.state.ctx
    ctx.reopen_database()
    if is_transient(exc):
        log.warning("the store %s cannot be reached: %s", ctx.settings.db, reason)
        return _json(503, "unavailable", f"the store {ctx.settings.db} cannot be reached: {reason}; retry in "
                     f"{_RETRY_S} s: the API reconnects by itself once it is back (nothing was changed)",
                     headers={"Retry-After": str(_RETRY_S)})
    log.warning("the database %s cannot be written: %s", ctx.settings.db, reason)
    return _json(503, "unavailable", f"the database {ctx.settings.db} cannot be written: {reason}; make the file "
                 "and its folder writable or free disk space, then try again (nothing was changed)")


def pydantic_details(err: ValidationError, prefix: str = "") -> list[ErrorDetail]:
    out = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"])
        out.append(ErrorDetail(field=f"{prefix}{loc}" if loc else prefix.rstrip(".") or "body",
                               problem=_problem(e["msg"])))
    return out


def _problem(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _summary(details: list[ErrorDetail]) -> str:
    return "; ".join(f"{d.field}: {d.problem}" for d in details[:5])


def on_api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[dict[str, Any]]:
    return _json(exc.status, exc.error, exc.message, exc.details, exc.headers)


#: msgspec's position in a malformed body: a 0-based byte offset
_BYTE_OFFSET = re.compile(r"\(byte (\d+)\)$")


def _with_position(message: str, body: Any) -> str:
    """"... (byte 12)" as every other error message gives positions: line and 1-based column, in characters."""
    m = _BYTE_OFFSET.search(message)
    if m is None or not isinstance(body, bytes):
        return message
    before = body[: int(m.group(1))].decode(errors="replace")
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return f"{message[: m.start()]}(at line {line}, column {column})"


def on_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """Litestar's request validation: name each field and its problem; a body that isn't JSON is a 400."""
    details: list[ErrorDetail] = []
    if isinstance(exc.extra, list):
        for item in exc.extra:
            if isinstance(item, dict):
                source = item.get("source") or "body"  # pydantic body errors come without a source
                where = getattr(source, "value", source)  # ParamType.QUERY -> "query"
                key = item.get("key")
                details.append(ErrorDetail(field=f"{where}.{key}" if key else str(where),
                                           problem=_problem(str(item.get("message", "")))))
    if not details:
        # e.g. a body that is not JSON at all, or the wrong media type
        return _json(400, "bad_request", str(exc.detail) or "malformed request")
    return _json(422, "invalid", _summary(details), details)


def on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "error"
    error = phrase.lower().replace(" ", "_").replace("-", "_")
    message = str(exc.detail or phrase)
    if exc.status_code == 400:  # e.g. a body that is not JSON: where, as the body was read for decoding
        message = _with_position(message, ScopeState.from_scope(request.scope).body)
    return _json(exc.status_code, error, message, headers=exc.headers)


#: scoring/errors.py class name -> (status, error kind), checked along the MRO; by name, because an
#: explanation worker process reports its error by name (see explain_pool.py)
SCORING_STATUS: dict[str, tuple[int, str]] = {
    "UserNotFound": (404, "not_found"),
    "RuleNotFound": (404, "not_found"),
    "RuleExists": (409, "conflict"),
    "RuleCompileError": (422, "invalid"),
    "EvaluationLimit": (422, "invalid"),
    "BadRequest": (422, "invalid"),
    "NotEnoughData": (503, "unavailable"),
    "ScoringError": (503, "unavailable"),  # e.g. a registered model without weights: not ready
}


def on_scoring(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Unknown user/rule 404, duplicate rule 409, bad rule or argument 422, model not ready 503."""
    reason = str(getattr(exc, "reason", "") or exc)
    for cls in type(exc).__mro__:
        if cls.__name__ in SCORING_STATUS:
            status, error = SCORING_STATUS[cls.__name__]
            break
    else:
        return on_unexpected(_, exc)
    details = []
    if type(exc).__name__ == "RuleCompileError":
        # "weight: ..." names its field; the sandbox's own reasons are about the condition
        head, sep, rest = reason.partition(": ")
        field, problem = (head, rest) if sep and head in RULE_FIELDS else ("condition", reason)
        details = [ErrorDetail(field=f"body.{field}", problem=problem)]
        reason = f"{field}: {problem}"
    return _json(status, error, reason, details)


RULE_FIELDS = frozenset({"name", "description", "weight", "condition", "enabled"})


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(500, "internal", "internal error; the server log has the details")


def exception_handlers() -> dict[type[Exception] | int, Any]:
    from scoring.errors import ScoringError

    return {
        ApiError: on_api_error,
        ValidationException: on_validation,
        HTTPException: on_http,
        ScoringError: on_scoring,
        RecursionError: on_recursion,
        sqlite3.Error: on_database,
        BackendError: on_database,
        Exception: on_unexpected,
    }


_DESCRIPTIONS = {
    400: "malformed request (e.g. a body that is not JSON), or a Host name the server does not answer for",
    401: "UPS_ADMIN_TOKEN is set and the request lacks 'Authorization: Bearer <token>'",
    403: "a change sent by a web page of another origin (not the server's own nor UPS_ALLOWED_ORIGINS)",
    404: "unknown id",
    409: "conflict: duplicate name, or a job of the same group is running",
    413: "request body larger than UPS_MAX_BODY_BYTES",
    415: "a change whose body is not sent as application/json",
    422: "invalid parameter or body; details name each field and its problem",
    503: "not ready (no trained model yet), shutting down, or the database cannot be written (read-only, full); the message says why",
}


def responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI documentation of the error answers a handler can give (all :class:`ErrorBody`)."""
    return {
        c: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS[c], generate_examples=False) for c in codes
    }


#: what every handler that takes parameters or a body can answer
INVALID = (400, 422)
#: what every mutating handler can answer besides
MUTATION = (400, 401, 403, 413, 415, 422)
