"""The rule engine: rules over profile fields → ``h_rule``, ``f_rule``, details.

A rule is (name, description, weight, condition, enabled). Enabled rules, in name order, make the rule
structure: ``h_rule[i]`` is 1 when rule i fired, ``f_rule`` the sum of the weights of the rules that fired.
A rule that does not compile, or that raises on a user, counts as not fired and says why in that user's
details: nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from pydantic import ValidationError

from storage.events import RulePayload

from .errors import RuleCompileError
from .sandbox import Expression, compile_expression

#: the fields of a profile document (``dataflow.profile.ProfileState.document``) a rule may read
PROFILE_FIELDS: frozenset[str] = frozenset({
    "user_id", "name", "gender", "age", "city", "plan_type", "level", "device_brand", "monthly_fee",
    "tenure_months", "registered", "event_counts", "call_partners", "call_partner_ids", "total_events",
    "call_duration", "app_duration", "spend", "first_event_at", "last_event_at",
})


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    description: str
    weight: float
    condition: str
    enabled: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "weight": self.weight,
                "condition": self.condition, "enabled": self.enabled}


#: the four default rules; loyal_user reads plan_type through str() so the condition compiles for any type
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("high_value_user", "high monthly fee and at least two years of tenure", 0.4,
         "monthly_fee > 300 and tenure_months >= 24"),
    Rule("loyal_user", "three years or more on a 5G or family plan", 0.3,
         "tenure_months >= 36 and ('5G' in str(plan_type) or '家庭' in str(plan_type))"),
    Rule("digital_enthusiast", "ten or more app sessions and clicks", 0.2,
         "event_counts.get('app.usage', 0) + event_counts.get('app.click', 0) >= 10"),
    Rule("at_risk_churn", "almost inactive, a year or more of tenure, low fee", -0.5,
         "total_events <= 2 and tenure_months >= 12 and monthly_fee < 80"),
)


def _field_errors(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'rule'}: {e['msg']}" for e in err.errors(include_url=False)
    )


def compile_condition(condition: str) -> Expression:
    """The condition compiled by the sandbox over :data:`PROFILE_FIELDS`; RuleCompileError names the problem."""
    try:
        return compile_expression(condition, PROFILE_FIELDS)
    except RuleCompileError as err:
        raise RuleCompileError(f"condition: {err.reason}") from None


def validate_rule(spec: Mapping[str, Any]) -> Rule:
    """A rule from untrusted input (API body, CLI); RuleCompileError names the field or the expression problem."""
    if not isinstance(spec, Mapping):
        raise RuleCompileError(f"a rule must be an object, not {type(spec).__name__}")
    try:
        p = RulePayload.model_validate(dict(spec))
    except ValidationError as err:
        raise RuleCompileError(_field_errors(err)) from None
    compile_condition(p.condition)
    return Rule(p.name, p.description, float(p.weight), p.condition, p.enabled)


@dataclass(frozen=True, slots=True)
class RuleDetail:
    name: str
    fired: bool
    weight: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fired": self.fired, "weight": self.weight, "error": self.error}


@dataclass(frozen=True, slots=True)
class RuleOutput:
    h_rule: np.ndarray  # float32, one 0/1 per rule of the structure
    f_rule: float
    details: list[RuleDetail]


class RuleEngine:
    """Compiled enabled rules in a stable (name) order."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(sorted((r for r in rules if r.enabled), key=lambda r: r.name))
        self._compiled: list[Expression | str] = []
        for r in self.rules:
            try:
                self._compiled.append(compile_condition(r.condition))
            except RuleCompileError as err:  # stored before the sandbox got stricter: reported per user
                self._compiled.append(f"does not compile: {err.reason}")
        self._weights = np.array([r.weight for r in self.rules], dtype=np.float64)

    @property
    def weights(self) -> np.ndarray:
        """The rules' weights in structure order: ``f_rule = h_rule · weights``."""
        return self._weights.copy()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules)

    @property
    def structure(self) -> tuple[tuple[str, str], ...]:
        """What the fusion's rule-side weights are tied to: which rules, testing what."""
        return tuple((r.name, r.condition) for r in self.rules)

    def evaluate(self, profile: Mapping[str, Any]) -> RuleOutput:
        h = np.zeros(len(self.rules), dtype=np.float32)
        details: list[RuleDetail] = []
        for i, (rule, expr) in enumerate(zip(self.rules, self._compiled)):
            error: str | None = None
            fired = False
            if isinstance(expr, str):
                error = expr
            else:
                try:
                    fired = bool(expr.evaluate(profile))
                except Exception as err:  # noqa: BLE001 - any failure is this rule's, reported not raised
                    error = f"{type(err).__name__}: {err}"
            h[i] = 1.0 if fired else 0.0
            details.append(RuleDetail(rule.name, fired, rule.weight, error))
        return RuleOutput(h, float(h.astype(np.float64) @ self._weights), details)

    def evaluate_many(self, profiles: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """(H, f): ``H[i]`` the rule vector of profile i, ``f[i]`` its rule score."""
        h = np.zeros((len(profiles), len(self.rules)), dtype=np.float32)
        for i, p in enumerate(profiles):
            h[i] = self.evaluate(p).h_rule
        return h, h.astype(np.float64) @ self._weights
