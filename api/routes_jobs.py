"""Jobs: submit (fusion training, HGT training; graph refresh and regenerate live with their areas),
list, and follow one. A job runs in its own worker process; ``?wait=true`` waits for its end."""

from __future__ import annotations

import time
from typing import Annotated, Any

import anyio
from litestar import Response, Router, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from config.db_location import DbLocation
from storage import open_store

from .context import AppContext, Ctx
from .errors import INVALID, MUTATION, Invalid, NotFound, Unavailable, responses
from .jobs import FINAL, GROUPS, job_view
from .schemas import NAME_PATTERN, FusionTrainIn, HgtTrainIn, JobList, JobOut

Wait = Annotated[bool, QueryParameter(name="wait", description="answer when the job has ended (bounded wait)")]


async def submit(ctx: AppContext, kind: str, params: dict[str, Any], wait: bool) -> Response[JobOut]:
    """202 with the queued job (Location: its URL), or 200 with the finished job when ``wait``."""
    if ctx.jobs is None or ctx.shutting_down:
        raise Unavailable("the API is shutting down; no new jobs")
    runner, db = ctx.jobs, ctx.settings.db
    row = await anyio.to_thread.run_sync(runner.submit, kind, params)
    if wait:
        deadline = time.monotonic() + ctx.settings.job_wait_timeout
        while (row["state"] not in FINAL or not runner.handled(row["id"])) and time.monotonic() < deadline:
            await anyio.sleep(0.2)
            row = await anyio.to_thread.run_sync(_reread, db, row)
        if row["state"] in FINAL:
            return Response(JobOut(**row), status_code=200)
    return Response(JobOut(**row), status_code=202, headers={"Location": f"/api/v1/jobs/{row['id']}"})


def _reread(db: DbLocation, row: dict[str, Any]) -> dict[str, Any]:
    """The job's row in the file it was submitted to (a regenerate switches files meanwhile)."""
    with open_store(db) as store:
        found = store.jobs.get(row["id"])
    return job_view(found) if found is not None else row


@post("/api/v1/operations/fusion/train", responses=responses(*MUTATION, 409, 503), status_code=202, summary="Train the fusion layer (background job)")
async def fusion_train(ctx: Ctx, data: JSONBody[FusionTrainIn], wait: Wait = False) -> Response[JobOut]:
    return await submit(ctx, "fusion.train", data.resolved(ctx.settings), wait)


@post("/api/v1/operations/training/hgt", responses=responses(*MUTATION, 409, 503), status_code=202,
      summary="Train the HGT model (background job); the result has the loss history and AUC per edge type")
async def hgt_train(ctx: Ctx, data: JSONBody[HgtTrainIn], wait: Wait = False) -> Response[JobOut]:
    try:
        params = data.resolved(ctx.settings)
    except ValueError as err:
        raise Invalid.field("body", str(err)) from None
    return await submit(ctx, "training.hgt", params, wait)


@get("/api/v1/jobs", responses=responses(*INVALID, 404), sync_to_thread=True, summary="Recent jobs, newest first")
def list_jobs(
    ctx: Ctx,
    kind: Annotated[str | None, QueryParameter(name="kind", pattern=r"^[a-z.]{1,40}$")] = None,
    limit: Annotated[int, QueryParameter(name="limit", ge=1, le=500)] = 50,
) -> JobList:
    if kind is not None and kind not in GROUPS:
        raise NotFound(f"no job kind {kind!r}; kinds: {', '.join(sorted(GROUPS))}")
    return JobList(jobs=[JobOut(**job_view(r)) for r in ctx.store().jobs.list(limit=limit, kind=kind)])


@get("/api/v1/jobs/{job_id:str}", responses=responses(*INVALID, 404), sync_to_thread=True, summary="One job: state, progress, result or error")
def get_job(ctx: Ctx, job_id: Annotated[str, PathParameter(pattern=NAME_PATTERN, max_length=64)]) -> JobOut:
    row = ctx.store().jobs.get(job_id)
    if row is None:
        raise NotFound(f"no job {job_id!r}")
    return JobOut(**job_view(row))


router = Router(path="/", route_handlers=[fusion_train, hgt_train, list_jobs, get_job], tags=["jobs"])
