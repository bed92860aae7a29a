"""The graph: full or sampled refresh (a background job) and node/edge counts per type."""

from __future__ import annotations


from litestar.params import JSONBody
from litestar import Response, Router, get, post

from scoring.results import GraphStatistics

from .errors import MUTATION, responses
from .context import Ctx
from .routes_jobs import Wait, submit
from .schemas import GraphRefreshIn, JobOut


@post("/api/v1/graph/refresh", responses=responses(*MUTATION, 409, 503), status_code=202,
      summary="Refresh embeddings (embedding_only) or retrain HGT + fusion (full_retrain), full or sampled graph")
async def graph_refresh(ctx: Ctx, data: JSONBody[GraphRefreshIn], wait: Wait = False) -> Response[JobOut]:
    return await submit(ctx, "graph.refresh", data.resolved(), wait)


@get("/api/v1/graph/statistics", responses=responses(503), sync_to_thread=True, summary="Node and edge counts per type")
def graph_statistics(ctx: Ctx) -> GraphStatistics:
    from scoring.graph_loader import graph_statistics as stats

    return stats(ctx.settings)


router = Router(path="/", route_handlers=[graph_refresh, graph_statistics], tags=["graph"])
