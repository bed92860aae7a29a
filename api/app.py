"""``create_app(settings)``: the Litestar application.

Routers, one per area, are listed in :data:`ROUTERS`; the web console (``api/console``, when
present) adds its own router and static files. The OpenAPI schema is at ``/schema/openapi.json``
and its UI at ``/schema/swagger``.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Sequence

import anyio
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.logging import LoggingConfig
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.pydantic import PydanticPlugin
from litestar.types import ControllerRouterHandler

from config.db_location import switched_to
from config.settings import Settings

from . import metrics, routes_data, routes_graph, routes_jobs, routes_ops, routes_rules, routes_users, sse
from .auth import admin_guard, check_token
from .control_chars import EscapingFormatter, RefuseControlCharacters
from .cross_site import CrossSiteGuard, SitePolicy
from .context import AppContext
from .errors import exception_handlers
from .jobs import JobRunner
from .openapi_ui import assets_router, swagger_plugin

log = logging.getLogger("ups.api")
LOG_FORMAT = "%(levelname)s - %(asctime)s - %(name)s - %(module)s - %(message)s"

ROUTERS: tuple[ControllerRouterHandler, ...] = (
    routes_ops.router,
    routes_users.router,
    routes_rules.router,
    routes_graph.router,
    routes_jobs.router,
    routes_data.router,
    sse.router,
    metrics.metrics,
    check_token,
)


def _provide_ctx(state: State) -> AppContext:
    return state.ctx  # type: ignore[no-any-return]


def _after_job(ctx: AppContext) -> Callable[[dict[str, Any]], None]:
    def hook(row: dict[str, Any]) -> None:
        if row["state"] != "succeeded":
            return
        if row["kind"] == "data.regenerate":
            new = (row.get("result") or {}).get("db")
            if new:
                old = ctx.settings.db
                ctx.store().ops.record(
                    "db.switch", f"switched to {new}; {old} kept", {"db": str(new), "job": row["id"]}, source="api"
                )
                ctx.switch_db(switched_to(old, str(new)))
                log.info("switched from %s to %s", old, new)
            return
        # a new model version: drop explanations computed with the old one
        if ctx.has_scoring():
            ctx.scoring().clear_cache()
        if ctx.explain_pool is not None:
            ctx.explain_pool.clear()

    return hook


def _lifespan(ctx: AppContext) -> Callable[[Litestar], Any]:
    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        runner = JobRunner(ctx.settings, on_finished=_after_job(ctx))
        stale = await anyio.to_thread.run_sync(runner.recover)
        if stale:
            log.warning("marked %d job(s) of a previous run failed: %s", len(stale), ", ".join(stale))
        ctx.jobs = runner
        ctx.start_explain_pool()
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while True:
                    await anyio.to_thread.run_sync(runner.poll)
                    await anyio.sleep(0.25)

            tg.start_soon(watch)
            tg.start_soon(_warm_up, ctx)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                await anyio.to_thread.run_sync(runner.cancel_all, "cancelled: the API stopped")
                if ctx.explain_pool is not None:
                    ctx.explain_pool.close()

    return lifespan


async def _warm_up(ctx: AppContext) -> None:
    """Load the scoring service (models, rules) before the first request needs it; /health answers meanwhile."""
    def warm() -> None:
        svc = ctx.build_scoring()
        some = ctx.store().profiles.ids(limit=1)
        if some:
            svc.score(some[0])  # loads the fusion model and the rules
        if ctx.explain_pool is not None:
            ctx.explain_pool.warm_up()

    try:
        await anyio.to_thread.run_sync(warm)
        ctx.scoring_state = "ready"
        # what start-up allocated (torch, models, Litestar's routes) lives as long as the process: out of
        # the collector's sight, so full collections stay short and don't show in the latency tail
        gc.freeze()
    except Exception as err:  # noqa: BLE001 - the requests that need it will report the problem themselves
        ctx.scoring_state = f"unavailable: {type(err).__name__}: {err}"
        log.warning("scoring service not ready at start-up", exc_info=True)
    if ctx.jobs is not None and ctx.settings.warm_job_workers:
        # after what requests need (they share the cores): torch, the scoring modules and the graph
        await anyio.to_thread.run_sync(ctx.jobs.warm, "graph", "fusion")


def _console() -> list[ControllerRouterHandler]:
    """The web console's router when ``api/console`` exists."""
    if importlib.util.find_spec("api.console") is None:
        return []
    module = importlib.import_module("api.console")
    return list(getattr(module, "route_handlers", []))


def create_app(
    settings: Settings | None = None,
    *,
    stop_server: Callable[[], None] | None = None,
    extra: Sequence[ControllerRouterHandler] = (),
) -> Litestar:
    settings = settings or Settings()
    ctx = AppContext(settings, stop_server)
    registry, http = metrics.build_registry(ctx)
    ctx.registry = registry
    openapi = OpenAPIConfig(
        title="UPS API",
        version="1",
        description=(
            "Real-time user profiling: profiles, fused rule/GNN scores, SHAP explanations, rules, jobs and "
            "operations. Errors are JSON: {status, error, message, details:[{field, problem}]}. With "
            "UPS_ADMIN_TOKEN set, POST/PUT/DELETE need 'Authorization: Bearer <token>'."
        ),
        path="/schema",
        render_plugins=[swagger_plugin(), JsonRenderPlugin()],
        components=Components(
            security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer", description="UPS_ADMIN_TOKEN")}
        ),
    )
    return Litestar(
        route_handlers=[*ROUTERS, assets_router(), *_console(), *extra],
        dependencies={"ctx": Provide(_provide_ctx, sync_to_thread=False)},
        guards=[admin_guard],
        exception_handlers=exception_handlers(),
        middleware=[RefuseControlCharacters(), CrossSiteGuard(SitePolicy.of(settings)), metrics.MetricsMiddleware(http)],
        openapi_config=openapi,
        # strict: "5" is not a number and 0 is not a boolean (a body of the wrong shape is refused)
        plugins=[PydanticPlugin(validate_strict=True)],
        request_max_body_size=settings.max_body_bytes,
        cors_config=CORSConfig(allow_origins=settings.cors_origins) if settings.cors_origins else None,
        lifespan=[_lifespan(ctx)],
        logging_config=LoggingConfig(formatters={"standard": {"()": EscapingFormatter, "format": LOG_FORMAT}}, loggers={
            "litestar": {"level": "INFO", "handlers": ["queue_listener"], "propagate": False},
        }),
        state=State({"ctx": ctx}),
        debug=False,
    )
