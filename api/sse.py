"""``GET /api/v1/operations/stream``: Server-Sent Events of status changes, job progress and commands.

Events: ``status`` (the dataflow summary, when it changes), ``job`` (a job row, when its state,
progress or message changes), ``op`` (a command recorded or resolved), ``metrics`` (the document of
``/api/v1/operations/metrics``: CPU share and memory of the API, its workers and the dataflow, GPU memory,
at once and then every ``UPS_SSE_METRICS_INTERVAL`` seconds; ``?metrics=false`` leaves them out). The
stream polls the store every ``UPS_SSE_INTERVAL`` seconds and sends a comment as keep-alive when nothing
changed.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Annotated, Any, AsyncIterator, Literal, Union

import anyio
from litestar import Router, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from pydantic import BaseModel, Field
from pydantic.json_schema import JsonDict

from .errors import INVALID, responses
from .context import AppContext, Ctx
from .jobs import job_view
from .resources import OperationsMetrics, operations_metrics
from .schemas import DataflowState, JobOut
from .status import dataflow_state

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0


class OpEntry(BaseModel):
    """An operator command as the stream sends it: its request and, once the flow acted, its effect."""

    id: int
    ts: float | None
    source: str
    command: str
    params: dict[str, Any]
    state: str = Field(description="pending | applied | rejected")
    effect: str | None
    applied_at: float | None


#: what the ``data:`` line of an event holds, by its kind: status, job, op, metrics
StreamData = Union[DataflowState, JobOut, OpEntry, OperationsMetrics]


def _ref(name: str) -> JsonDict:
    return {"$ref": f"#/components/schemas/{name}"}


class StreamEvent(BaseModel):
    """One Server-Sent Event of the stream (``event:``, ``id:`` and one ``data:`` line of JSON); keep-alive
    comments (``: keep-alive``) come between them when nothing changed."""

    event: Literal["status", "job", "op", "metrics"]
    id: str = Field(pattern="^[1-9][0-9]*$", description="numbers the events of one connection from 1")
    data: str = Field(
        description="one JSON document: status, the dataflow summary; job, a job; op, an operator command; "
        "metrics, the document of /api/v1/operations/metrics",
        json_schema_extra={
            "contentMediaType": "application/json",
            # the other documents are components through their own endpoints; the command's is only here
            "contentSchema": {"oneOf": [_ref("DataflowState"), _ref("JobOut"), OpEntry.model_json_schema(),
                                        _ref("OperationsMetrics")]},
        },
    )


def _snapshot(ctx: AppContext, since: float) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    store = ctx.store()
    flow = dataflow_state(store, ctx.settings.dataflow_stale_after).model_dump()
    flow.pop("status_age_s", None)  # changes every poll; not a change of state
    jobs = [job_view(r) for r in store.jobs.list(limit=20) if r["state"] in ("queued", "running")
            or (r["finished_at"] or 0) >= since]
    ops = [o for o in store.ops.list(limit=20) if max(o["ts"] or 0, o["applied_at"] or 0) >= since]
    return flow, jobs, ops


async def _events(
    ctx: AppContext, limit: int | None, timeout: float | None, metrics: bool
) -> AsyncIterator[ServerSentEventMessage]:
    start = time.time()
    sent: dict[tuple[str, str], str] = {}  # (kind, key) -> last sent fingerprint
    n = 0
    last_sent = time.monotonic()
    next_metrics = time.monotonic() if metrics else float("inf")
    while True:
        flow, jobs, ops = _snapshot(ctx, start - 1)
        out: list[ServerSentEventMessage] = []
        items = [("status", "dataflow", flow)] + [("job", j["id"], j) for j in jobs] + [
            ("op", str(o["id"]), o) for o in ops
        ]
        for kind, key, doc in items:
            fp = json.dumps(
                {k: v for k, v in doc.items() if k != "duration_s"}, sort_keys=True, default=str
            )
            if sent.get((kind, key)) != fp:
                sent[(kind, key)] = fp
                n += 1
                out.append(ServerSentEventMessage(data=json.dumps(doc, default=str), event=kind, id=n))
        if time.monotonic() >= next_metrics:
            # always sent (figures move all the time); psutil and SQLite reads off the event loop
            next_metrics = time.monotonic() + ctx.settings.sse_metrics_interval
            try:
                figures = await anyio.to_thread.run_sync(operations_metrics, ctx)
            except Exception:  # a reading that failed skips one metrics event; the stream goes on
                log.exception("metrics for the operations stream")
            else:
                n += 1
                out.append(ServerSentEventMessage(data=json.dumps(figures, default=str), event="metrics", id=n))
        for msg in out:
            yield msg
            last_sent = time.monotonic()
            if limit is not None and n >= limit:
                return
        if timeout is not None and time.time() - start >= timeout:
            return
        if time.monotonic() - last_sent > KEEPALIVE_S:
            yield ServerSentEventMessage(comment="keep-alive", data=None)
            last_sent = time.monotonic()
        await anyio.sleep(ctx.settings.sse_interval)


_STREAM_BODY = ResponseSpec(data_container=StreamEvent, media_type="text/event-stream", generate_examples=False,
                            description="a stream of events, each one StreamEvent")


@get("/api/v1/operations/stream", responses={200: _STREAM_BODY, **responses(*INVALID)}, media_type="text/event-stream", summary="Server-Sent Events: status changes, job progress, commands, process metrics")
async def stream(
    ctx: Ctx,
    limit: Annotated[int | None, QueryParameter(name="limit", ge=1, le=100_000,
                                           description="close after this many events")] = None,
    timeout: Annotated[float | None, QueryParameter(name="timeout", gt=0, le=86_400,
                                               description="close after this many seconds")] = None,
    metrics: Annotated[bool, QueryParameter(name="metrics", description="send metrics events")] = True,
) -> ServerSentEvent:
    longest = ctx.settings.sse_max_duration
    return ServerSentEvent(_events(ctx, limit, min(timeout, longest) if timeout else longest, metrics))


router = Router(path="/", route_handlers=[stream], tags=["operations"])
