"""Business rules: list, create, update, delete, preview. Stored as events by the scoring service."""

from __future__ import annotations

from typing import Annotated

from typing_extensions import TypedDict

from litestar import Router, delete, get, post, put
from litestar.openapi.spec import Example
from litestar.params import JSONBody, PathParameter

from scoring.results import RuleChanged, RuleDeleted, RulePreview, RuleView

from .context import Ctx
from .errors import INVALID, MUTATION, responses
from .schemas import NAME_PATTERN, RuleIn, RulePreviewIn, RuleUpdate

class RuleList(TypedDict):
    rules: list[RuleView]
    version: int


RuleName = Annotated[
    str,
    PathParameter(pattern=NAME_PATTERN, max_length=64, description="rule name",
                  examples=[Example(summary="a default rule", value="high_value_user")]),
]


@get("/api/v1/rules", responses=responses(503), sync_to_thread=True, summary="The rules and the rules version")
def list_rules(ctx: Ctx) -> RuleList:
    svc = ctx.scoring()
    return {"rules": svc.list_rules(), "version": svc.rules_version()}


@post("/api/v1/rules", responses=responses(*MUTATION, 409, 503), status_code=201, sync_to_thread=True,
      summary="Create a rule (409 when the name exists, 422 when the condition does not compile)")
def create_rule(ctx: Ctx, data: JSONBody[RuleIn]) -> RuleChanged:
    return ctx.scoring().create_rule(data.model_dump())


@put("/api/v1/rules/{name:str}", responses=responses(*MUTATION, 404, 503), sync_to_thread=True, summary="Change a rule; fields left out keep their value")
def update_rule(ctx: Ctx, name: RuleName, data: JSONBody[RuleUpdate]) -> RuleChanged:
    return ctx.scoring().update_rule(name, data.model_dump(exclude_unset=True))


@delete("/api/v1/rules/{name:str}", responses=responses(*INVALID, 401, 403, 404, 503), status_code=200, sync_to_thread=True, summary="Delete a rule")
def delete_rule(ctx: Ctx, name: RuleName) -> RuleDeleted:
    return ctx.scoring().delete_rule(name)


@post("/api/v1/rules/preview", responses=responses(*MUTATION, 503), status_code=200, sync_to_thread=True,
      summary="How many users of a sample a condition fires for (nothing is stored)")
def preview_rule(ctx: Ctx, data: JSONBody[RulePreviewIn]) -> RulePreview:
    return ctx.scoring().preview_rule(data.condition, sample=data.sample)


router = Router(path="/", route_handlers=[list_rules, create_rule, update_rule, delete_rule, preview_rule],
                tags=["rules"])
