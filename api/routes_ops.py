"""Operations: health, status, start/stop of ingestion and of the incremental refresh, rules refresh,
explainer cache clear, process metrics and shutdown."""

from __future__ import annotations

import logging
import os
import time
from typing import Literal

import anyio
from litestar import Response, Router, get, post
from litestar.background_tasks import BackgroundTask
from litestar.handlers import HTTPRouteHandler


from . import commands, resources
from .errors import responses
from .context import AppContext, Ctx
from .schemas import CommandOut, Health, OpRecord, ShutdownOut
from .status import OperationsStatus, dataflow_state, full_status, jobs_summary, model_versions

log = logging.getLogger("ups.api")


@get("/health", summary="Liveness and a summary of the system (fast: no scoring, no locks)")
async def health(ctx: Ctx) -> Health:
    store = ctx.store()
    flow = dataflow_state(store, ctx.settings.dataflow_stale_after)
    status: Literal["ok", "degraded", "shutting_down"] = (
        "shutting_down" if ctx.shutting_down else ("ok" if flow.alive else "degraded")
    )
    return Health(
        status=status,
        api={**ctx.info(), "pid": os.getpid()},
        dataflow=flow,
        jobs=jobs_summary(store),
        models=model_versions(store),
    )


@get("/api/v1/operations/status", sync_to_thread=True, summary="Dataflow state, components, jobs, history")
def operations_status(ctx: Ctx) -> OperationsStatus:
    return {"api": ctx.info(), "shutting_down": ctx.shutting_down,
            **full_status(ctx.store(), ctx.settings.dataflow_stale_after)}


def _command_handler(target: str, action: str, command: str) -> HTTPRouteHandler:
    async def handler(ctx: Ctx) -> CommandOut:
        return await commands.send(ctx, command)

    handler.__name__ = f"{target}_{action}"
    return post(
        f"/api/v1/operations/{target}/{action}",
        status_code=200,
        responses=responses(401, 403),
        summary=f"{action.capitalize()} {target} in the running dataflow; answers with the resulting state",
        description="state is 'applied' once the flow took it, or 'pending' when no flow runs yet.",
    )(handler)


COMMAND_HANDLERS = [
    _command_handler("ingestion", "start", "ingestion.start"),
    _command_handler("ingestion", "stop", "ingestion.stop"),
    _command_handler("incremental", "start", "incremental.start"),
    _command_handler("incremental", "stop", "incremental.stop"),
]


def _record(ctx: AppContext, command: str, effect: str) -> None:
    ctx.store().ops.record(command, effect, source="api")


@post("/api/v1/operations/rules/refresh", responses=responses(401, 403, 503), status_code=200, sync_to_thread=True,
      summary="Rebuild the rule structure from the rules projection and clear the explainer cache")
def rules_refresh(ctx: Ctx) -> OpRecord:
    out = ctx.scoring().refresh_rules()  # also clears the explainer cache
    if ctx.explain_pool is not None:
        out["cache_cleared"] += ctx.explain_pool.clear()
    effect = (f"rules reloaded (version {out['rules_version']}, {len(out['rules'])} rules"
              f"{', structure changed' if out['structure_changed'] else ''}); "
              f"{out['cache_cleared']} cached explanations cleared")
    _record(ctx, "rules.refresh", effect)
    return OpRecord(command="rules.refresh", effect=effect)


@post("/api/v1/operations/explainer/clear", responses=responses(401, 403, 503), status_code=200, sync_to_thread=True,
      summary="Clear the SHAP explainer cache (background and explanations)")
def explainer_clear(ctx: Ctx) -> OpRecord:
    n = ctx.scoring().clear_cache()
    if ctx.explain_pool is not None:
        n += ctx.explain_pool.clear()
    effect = f"explainer cache cleared ({n} explanations)"
    _record(ctx, "explainer.clear", effect)
    return OpRecord(command="explainer.clear", effect=effect)


@get("/api/v1/operations/metrics", sync_to_thread=True,
     summary="Process resources (CPU, RSS, GPU memory) and ingestion/refresh/training figures")
def operations_metrics(ctx: Ctx) -> resources.OperationsMetrics:
    return resources.operations_metrics(ctx)


async def _shutdown(ctx: AppContext, flow_was_alive: bool) -> None:
    """After the 202 went out: wait for the dataflow to stop (bounded), then stop the HTTP server."""
    if flow_was_alive:
        deadline = time.monotonic() + ctx.settings.shutdown_timeout
        while time.monotonic() < deadline:
            if not dataflow_state(ctx.store(), ctx.settings.dataflow_stale_after).alive:
                break
            await anyio.sleep(0.2)
        else:
            log.warning("the dataflow did not stop within %.0f s", ctx.settings.shutdown_timeout)
    ctx.stop_server()


@post("/api/v1/operations/shutdown", responses=responses(401, 403), status_code=202,
      summary="Stop jobs, stop the dataflow cleanly, then the API itself")
async def shutdown(ctx: Ctx) -> Response[ShutdownOut]:
    ctx.shutting_down = True
    cancelled = (
        await anyio.to_thread.run_sync(ctx.jobs.cancel_all, "cancelled by shutdown") if ctx.jobs else []
    )
    alive = dataflow_state(ctx.store(), ctx.settings.dataflow_stale_after).alive
    if alive:
        ack = await commands.send(ctx, "shutdown", wait=0)
        flow = f"shutdown requested (command {ack.id})"
    else:
        flow = "no dataflow running"
        await anyio.to_thread.run_sync(_record, ctx, "shutdown", "API stopped; no dataflow was running")
    return Response(
        ShutdownOut(state="shutting_down", cancelled_jobs=cancelled, dataflow=flow),
        status_code=202,
        background=BackgroundTask(_shutdown, ctx, alive),
    )


router = Router(
    path="/",
    route_handlers=[
        health, operations_status, *COMMAND_HANDLERS, rules_refresh, explainer_clear, operations_metrics, shutdown,
    ],
    tags=["operations"],
)
