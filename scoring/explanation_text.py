"""Contributions as a person reads them: each with the feature's value, the background's value and one
sentence ("monthly fee 58 (average 142) lowers the score by 0.041").

One rounding rule for every contribution shown anywhere (API sentences, CLI, console): :func:`fmt_effect`,
three decimals. The numbers in the API stay unrounded so that ``base_value + Σ value = score`` holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .explainer import DIMENSION_PREFIX, NEIGHBOURHOOD_GROUP, PROFILE_GROUP, Kind, feature_kind
from .profile_features import LABELS as PROFILE_LABELS

#: decimals of every contribution shown to a person
EFFECT_DECIMALS = 3


def fmt_effect(v: float) -> str:
    """A contribution's size as shown everywhere: three decimals, no sign."""
    return f"{abs(v):.{EFFECT_DECIMALS}f}"


def fmt_value(v: float) -> str:
    """A feature value: whole numbers as such, others to one decimal (two below 1)."""
    if not np.isfinite(v):
        return "missing"
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.2f}" if abs(v) < 1 else f"{v:.1f}"


def _effect(v: float, plural: bool = False) -> str:
    s = "" if plural else "s"
    if round(v, EFFECT_DECIMALS) == 0:
        return f"do{'' if plural else 'es'} not change the score" if v == 0 else \
            f"change{s} the score by less than {fmt_effect(0.0005)}"
    return f"{'raise' if v > 0 else 'lower'}{s} the score by {fmt_effect(v)}"


def label_of(feature: str) -> str:
    """A profile number's or a call-neighbourhood dimension's name in words (others: the feature itself)."""
    if feature.startswith(DIMENSION_PREFIX):
        return f"call neighbourhood dimension {feature.removeprefix(DIMENSION_PREFIX)}"
    return PROFILE_LABELS.get(feature, feature)


def sentence(feature: str, kind: Kind, value: float, feature_value: float | None,
             background_value: float | None) -> str:
    if kind == "rule":
        state = "fired" if feature_value else "did not fire"
        share = "" if background_value is None else f" (fires for {background_value:.0%} on average)"
        return f"rule {feature} {state}{share} {_effect(value)}"
    if feature == PROFILE_GROUP:
        return f"the profile's numbers (fee, tenure, activity) {_effect(value, plural=True)}"
    if feature == NEIGHBOURHOOD_GROUP:
        return f"the call neighbourhood (the users within two calls, by their graph embeddings) {_effect(value)}"
    label = label_of(feature)
    avg = "" if background_value is None else f" (average {fmt_value(background_value)})"
    return f"{label} {fmt_value(feature_value) if feature_value is not None else 'n/a'}{avg} {_effect(value)}"


def contribution_entries(contributions: list[tuple[str, float]], row: np.ndarray, background: np.ndarray,
                         names: list[str], rule_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """One dict per contribution: feature, label, kind, value (the contribution), feature_value,
    background_value (the background's mean; for a rule the share it fired for) and text."""
    column = {n: i for i, n in enumerate(names)}
    means = np.nanmean(background, axis=0) if len(background) else np.full(len(names), np.nan)
    out = []
    for feature, value in contributions:
        kind: Kind = {NEIGHBOURHOOD_GROUP: "neighbourhood", PROFILE_GROUP: "profile"}.get(  # type: ignore[assignment]
            feature, feature_kind(feature, rule_names))
        i = column.get(feature)
        fv = None if i is None else float(row[i])
        bv = None if i is None or not np.isfinite(means[i]) else float(means[i])
        out.append({"feature": feature, "label": label_of(feature), "kind": kind,
                    "value": value, "feature_value": fv if fv is None or np.isfinite(fv) else None,
                    "background_value": bv, "text": sentence(feature, kind, value, fv, bv)})
    return out
