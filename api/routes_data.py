"""The mock generator's settings (kept as ``ops.data_config`` events in the log) and regenerate:
a fresh dataset in a new database file that the running system switches to, the old file kept."""

from __future__ import annotations

from typing import Any

import anyio
from litestar.params import JSONBody
from litestar import Response, Router, get, post
from pydantic import BaseModel, ValidationError

from storage import open_store
from storage import data_config

from . import commands
from .context import AppContext, Ctx
from .errors import Invalid, MUTATION, pydantic_details, responses
from .routes_jobs import Wait, submit
from .schemas import CommandOut, DataConfig, DataConfigPatch, JobOut

class DataConfigOut(BaseModel):
    config: DataConfig
    source: str
    live: CommandOut | None = None


def current_config(ctx: AppContext) -> tuple[DataConfig, str]:
    """The newest ``ops.data_config`` event, else the settings (UPS_USERS, UPS_LIVE_RATE, …)."""
    found = data_config.latest(ctx.store())
    if found is not None:
        try:
            return DataConfig.model_validate(found[0]), f"event seq {found[1]}"
        except ValidationError:
            pass  # a record this version can't read: fall back to the settings rather than fail
    s = ctx.settings
    return DataConfig.model_validate({k: getattr(s, k) for k in DataConfig.model_fields}), "settings"


def merged(base: DataConfig, patch: DataConfigPatch | None) -> DataConfig:
    # a field left out or null keeps its value (forms send null for an empty input)
    changes = {k: v for k, v in patch.model_dump(exclude_unset=True).items() if v is not None} if patch else {}
    try:
        return DataConfig.model_validate({**base.model_dump(), **changes})
    except ValidationError as err:
        details = pydantic_details(err, "body.")
        raise Invalid("; ".join(f"{d.field}: {d.problem}" for d in details), details) from None


@get("/api/v1/data/config", sync_to_thread=True, summary="The mock generator's settings")
def get_config(ctx: Ctx) -> DataConfigOut:
    cfg, source = current_config(ctx)
    return DataConfigOut(config=cfg, source=source)


@post("/api/v1/data/config", responses=responses(*MUTATION), status_code=200,
      summary="Change the generator's settings (validated); live rate/delay reach the running dataflow")
async def set_config(ctx: Ctx, data: JSONBody[DataConfigPatch]) -> DataConfigOut:
    before, _ = await anyio.to_thread.run_sync(current_config, ctx)
    cfg = merged(before, data)
    event = data_config.event(cfg.model_dump())

    def append() -> int:
        with open_store(ctx.settings.db) as store:
            res = store.append([event])
        return res.new[0][0] if res.new else 0

    seq = await anyio.to_thread.run_sync(append)
    live = None
    if any(getattr(cfg, f) != getattr(before, f) for f in data_config.LIVE_FIELDS):
        live = await commands.send(ctx, "generator.config", {"rate": cfg.live_rate, "delay": cfg.live_delay})
    return DataConfigOut(config=cfg, source=f"event seq {seq}", live=live)


@post("/api/v1/data/regenerate", responses=responses(*MUTATION, 409, 503), status_code=202,
      summary="Generate a fresh dataset and initial model in a new database file, then switch to it")
async def regenerate(ctx: Ctx, data: JSONBody[DataConfigPatch | None] = None, wait: Wait = False) -> Response[JobOut]:
    base, _ = await anyio.to_thread.run_sync(current_config, ctx)
    cfg = merged(base, data)
    params: dict[str, Any] = {"config": cfg.model_dump()}
    return await submit(ctx, "data.regenerate", params, wait)


router = Router(path="/", route_handlers=[get_config, set_config, regenerate], tags=["data"])
