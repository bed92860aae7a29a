"""Business rules: list, create, update, delete, preview. Stored as events by the scoring service."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Router, delete, get, post, put
from litestar.params import JSONBody, PathParameter, QueryParameter

from .context import Ctx
from .errors import INVALID, MUTATION, NotFound, responses
from .schemas import NAME_PATTERN, RuleIn, RulePreviewIn, RuleUpdate

RuleName = Annotated[str, PathParameter(pattern=NAME_PATTERN, max_length=64, description="rule name")]


@get("/api/v1/rules", responses=responses(503), sync_to_thread=True, summary="The rules and the rules version")
def list_rules(ctx: Ctx) -> dict[str, Any]:
    svc = ctx.scoring()
    return {"rules": svc.list_rules(), "version": svc.rules_version()}


@post("/api/v1/rules", responses=responses(*MUTATION, 409, 503), status_code=201, sync_to_thread=True,
      summary="Create a rule (409 when the name exists, 422 when the condition does not compile)")
def create_rule(ctx: Ctx, data: JSONBody[RuleIn]) -> dict[str, Any]:
    return ctx.scoring().create_rule(data.model_dump())


@put("/api/v1/rules/{name:str}", responses=responses(*MUTATION, 404, 503), sync_to_thread=True, summary="Change a rule; fields left out keep their value")
def update_rule(ctx: Ctx, name: RuleName, data: JSONBody[RuleUpdate]) -> dict[str, Any]:
    svc = ctx.scoring()
    current = next((r for r in svc.list_rules() if r["name"] == name), None)
    if current is None:
        raise NotFound(f"no rule {name!r}")
    spec = {k: current[k] for k in ("name", "description", "weight", "condition", "enabled") if k in current}
    spec.update(data.model_dump(exclude_unset=True))
    return svc.update_rule(name, spec)


@delete("/api/v1/rules/{name:str}", responses=responses(*INVALID, 401, 404, 503), status_code=200, sync_to_thread=True, summary="Delete a rule")
def delete_rule(ctx: Ctx, name: RuleName) -> dict[str, Any]:
    ctx.scoring().delete_rule(name)
    return {"deleted": name}


@post("/api/v1/rules/preview", responses=responses(*MUTATION, 503), status_code=200, sync_to_thread=True,
      summary="How many users of a sample a condition fires for (nothing is stored)")
def preview_rule(ctx: Ctx, data: JSONBody[RulePreviewIn]) -> dict[str, Any]:
    return ctx.scoring().preview_rule(data.condition, sample=data.sample)


router = Router(path="/", route_handlers=[list_rules, create_rule, update_rule, delete_rule, preview_rule],
                tags=["rules"])
