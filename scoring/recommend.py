"""Strategy recommendations as configurable strategy rules.

A strategy is a sandboxed condition over the profile (plus the fused ``score``, ``gate``, ``f_rule``,
``f_nn``), a title, a reason template whose ``{...}`` parts are sandboxed expressions too, and a priority.
Every strategy whose condition holds is recommended, highest priority first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from storage.events import Id

from .results import Recommendation
from .errors import RuleCompileError
from .rules import PROFILE_FIELDS
from .sandbox import Expression, compile_expression

#: fields a strategy may read besides the profile's: the user's fused score
SCORE_FIELDS: frozenset[str] = frozenset({"score", "gate", "f_rule", "f_nn"})
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


class StrategySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Id
    title: str = Field(min_length=1, max_length=100)
    condition: str = Field(min_length=1, max_length=2000)
    reason: str = Field(min_length=1, max_length=500, description="text; {expression} parts are filled in")
    priority: float = Field(0.5, ge=0, le=1000, allow_inf_nan=False)


DEFAULT_STRATEGIES: tuple[StrategySpec, ...] = (
    StrategySpec(name="retention_offer", title="Retention offer", priority=0.95,
                 condition="score < 0.4",
                 reason="fused retention score {score} is low: offer a loyalty discount before the user leaves"),
    StrategySpec(name="plan_upgrade", title="Plan upgrade", priority=0.8,
                 condition="monthly_fee < 50",
                 reason="monthly fee {monthly_fee} CNY is below 50 CNY on {plan_type}: suggest a richer plan"),
    StrategySpec(name="data_pack", title="Data pack", priority=0.7,
                 condition="event_counts.get('app.usage', 0) + event_counts.get('app.click', 0) >= 10",
                 reason="{event_counts.get('app.usage', 0) + event_counts.get('app.click', 0)} app sessions and "
                        "clicks: a data pack fits heavy app usage"),
    StrategySpec(name="first_order_offer", title="First-order offer", priority=0.6,
                 condition="event_counts.get('product.order', 0) == 0",
                 reason="no product orders yet: a first-order discount lowers the threshold"),
    StrategySpec(name="five_g_upgrade", title="5G upgrade", priority=0.5,
                 condition="'4G' in str(plan_type) and tenure_months >= 12",
                 reason="{tenure_months} months on {plan_type}: offer the 5G upgrade pack"),
    StrategySpec(name="voice_pack", title="Voice pack", priority=0.4,
                 condition="event_counts.get('call', 0) >= 15",
                 reason="{event_counts.get('call', 0)} calls with {call_partners} partners: a voice pack saves money"),
    StrategySpec(name="loyalty_reward", title="Loyalty reward", priority=0.3,
                 condition="tenure_months >= 60",
                 reason="{tenure_months} months with us: thank the subscriber with a loyalty reward"),
)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value == value else "nan"
    return str(value)


@dataclass(frozen=True, slots=True)
class _Compiled:
    spec: StrategySpec
    condition: Expression
    template: list[str | Expression]  # literal text and expressions, alternating as written


class Recommender:
    """Compiled strategies; :meth:`recommend` ranks those whose condition holds for a user."""

    def __init__(self, specs: Iterable[StrategySpec | Mapping[str, Any]] | None = None) -> None:
        fields = PROFILE_FIELDS | SCORE_FIELDS
        self.strategies: list[_Compiled] = []
        seen: set[str] = set()
        for raw in DEFAULT_STRATEGIES if specs is None else specs:
            spec = raw if isinstance(raw, StrategySpec) else _spec(raw)
            if spec.name in seen:
                raise RuleCompileError(f"strategy {spec.name}: defined twice")
            seen.add(spec.name)
            try:
                cond = compile_expression(spec.condition, fields)
                parts: list[str | Expression] = []
                for i, piece in enumerate(_PLACEHOLDER.split(spec.reason)):
                    parts.append(compile_expression(piece, fields) if i % 2 else piece)
            except RuleCompileError as err:
                raise RuleCompileError(f"strategy {spec.name}: {err.reason}") from None
            self.strategies.append(_Compiled(spec, cond, parts))

    def evaluate(
        self, profile: Mapping[str, Any], scores: Mapping[str, Any] | None = None
    ) -> tuple[list[Recommendation], list[dict[str, str]]]:
        """(recommendations, failures): failures name the strategy and the error."""
        ns = {**profile, **(scores or {})}
        out: list[Recommendation] = []
        failed: list[dict[str, str]] = []
        for c in self.strategies:
            try:
                if not c.condition.evaluate(ns):
                    continue
                reason = "".join(p if isinstance(p, str) else _show(p.evaluate(ns)) for p in c.template)
            except Exception as err:  # noqa: BLE001 - one strategy's failure must not hide the others
                failed.append({"strategy": c.spec.name, "error": f"{type(err).__name__}: {err}"})
                continue
            out.append({"strategy": c.spec.name, "title": c.spec.title, "reason": reason, "priority": c.spec.priority})
        out.sort(key=lambda r: (-r["priority"], r["strategy"]))
        return out, failed


def _spec(raw: Mapping[str, Any]) -> StrategySpec:
    try:
        return StrategySpec.model_validate(dict(raw))
    except ValidationError as err:
        name = raw.get("name", "?") if isinstance(raw, Mapping) else "?"
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors(include_url=False))
        raise RuleCompileError(f"strategy {name}: {problems}") from None
