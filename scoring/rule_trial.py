"""A rule condition tried on stored users: how many it fires for (the preview), and whether it stays
within the sandbox's cost bounds (before it is saved)."""

from __future__ import annotations

import time
from typing import Any, Mapping

from .errors import EvaluationLimit, RuleCompileError
from .sandbox import Expression


def preview(expr: Expression, profiles: Mapping[str, Mapping[str, Any]], timeout: float) -> dict[str, Any]:
    """``{fired, sample, errors, error_examples}`` over ``profiles``; EvaluationLimit past ``timeout`` s.

    Each evaluation is bounded by the sandbox; the whole preview by the deadline, so a costly condition over
    a large sample is refused with the reason instead of holding a worker thread for minutes."""
    fired = 0
    errors: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    for done, (uid, p) in enumerate(profiles.items()):
        if time.monotonic() > deadline:
            raise EvaluationLimit(
                f"the condition took more than {timeout:g} s over {done} of {len(profiles)} users "
                "(limit UPS_RULE_PREVIEW_TIMEOUT); simplify it or preview a smaller sample"
            )
        try:
            fired += bool(expr.evaluate(p))
        except Exception as err:  # noqa: BLE001 - reported, as it would be per user
            errors.append({"user_id": uid, "error": f"{type(err).__name__}: {err}"})
    return {"fired": fired, "sample": len(profiles), "errors": len(errors), "error_examples": errors[:3]}


def refuse_if_over_bounds(expr: Expression, profiles: Mapping[str, Mapping[str, Any]]) -> None:
    """RuleCompileError (422) when the condition exceeds the sandbox's cost bounds on any of ``profiles``:
    saved, it would only report the bound on every score. Other failures stay per-user reports."""
    for uid, p in profiles.items():
        try:
            expr.evaluate(p)
        except EvaluationLimit as err:
            raise RuleCompileError(f"condition: {err} (for user {uid}); simplify it") from None
        except Exception:  # noqa: BLE001 - e.g. a KeyError for this user: reported when scored
            pass
