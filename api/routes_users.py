"""Per-user reads: profile with its fused score, recommendations, SHAP explanation.

Profile, score and recommendations are cheap reads, served on the event loop when the scoring service
is free (``AppContext.read``) and in a worker thread when it is busy; explanations (Kernel SHAP, the
heavy part) run in worker processes (explain_pool.py), so a burst of them never starves the event loop
or the cheap reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from typing_extensions import TypedDict

import anyio
from litestar import Router, get
from litestar.openapi.spec import Example
from litestar.params import PathParameter, QueryParameter

from scoring.results import ExplanationResult, ProfileDocument, Recommendation, ScoreResult

from .errors import INVALID, responses
from .context import Ctx
from .schemas import NAME_PATTERN

if TYPE_CHECKING:
    from scoring.service import ScoringService

UserId = Annotated[
    str,
    PathParameter(pattern=NAME_PATTERN, max_length=64, description="user id",
                  examples=[Example(summary="a user of the generated dataset", value="U0000001")]),
]


class UserOut(TypedDict):
    user_id: str
    profile: ProfileDocument
    score: ScoreResult


class RecommendationsOut(TypedDict):
    user_id: str
    recommendations: list[Recommendation]


def _user(svc: ScoringService, user_id: str) -> UserOut:
    profile = svc.profile(user_id)  # UserNotFound -> 404
    return {"user_id": user_id, "profile": profile, "score": svc.score(user_id)}


@get("/api/v1/user/{user_id:str}", responses=responses(*INVALID, 404, 503), summary="Profile (attributes, counters) and fused score")
async def user(ctx: Ctx, user_id: UserId) -> UserOut:
    return await ctx.read(lambda svc: _user(svc, user_id))


@get("/api/v1/recommendation/{user_id:str}", responses=responses(*INVALID, 404, 503), summary="Rule-based strategy recommendations")
async def recommendation(ctx: Ctx, user_id: UserId) -> RecommendationsOut:
    return {"user_id": user_id, "recommendations": await ctx.read(lambda svc: svc.recommendations(user_id))}


@get("/api/v1/explain/{user_id:str}", responses=responses(*INVALID, 404, 503), summary="Fused score with its SHAP explanation (top-K contributions)")
async def explain(
    ctx: Ctx,
    user_id: UserId,
    mode: Annotated[Literal["per_dimension", "grouped"], QueryParameter(name="mode")] = "per_dimension",
    top_k: Annotated[int, QueryParameter(name="top_k", ge=1, le=50)] = 5,
) -> ExplanationResult:
    ctx.require_ready()
    if ctx.explain_pool is not None:
        out = await ctx.explain_pool.explain(user_id, mode, top_k)
    else:
        svc = await anyio.to_thread.run_sync(ctx.scoring)
        out = await anyio.to_thread.run_sync(
            lambda: svc.explain(user_id, mode=mode, top_k=top_k), limiter=ctx.explain_limiter
        )
    out["user_id"] = user_id
    return out


router = Router(path="/", route_handlers=[user, recommendation, explain], tags=["users"])
