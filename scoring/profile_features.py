"""The profile's numeric features the fusion's rule side reads besides the rules (``h_rule``).

Values stay on the profile's own scale (a fee in CNY, months, counts) so an explanation can show them as
they are ("monthly fee 58, average 142"); the fusion applies ``log1p`` to the skewed ones and
standardises them itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np


def _count(*types: str) -> Callable[[Mapping[str, Any]], float]:
    def read(profile: Mapping[str, Any]) -> float:
        counts = profile.get("event_counts") or {}
        return float(sum(counts.get(t, 0) or 0 for t in types))

    return read


def _field(name: str) -> Callable[[Mapping[str, Any]], float]:
    def read(profile: Mapping[str, Any]) -> float:
        v = profile.get(name)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")

    return read


@dataclass(frozen=True, slots=True)
class ProfileFeature:
    name: str
    label: str  # how an explanation names it
    read: Callable[[Mapping[str, Any]], float]
    log: bool  # skewed and non-negative: the model sees log1p(value)


PROFILE_FEATURES: tuple[ProfileFeature, ...] = (
    ProfileFeature("monthly_fee", "monthly fee", _field("monthly_fee"), True),
    ProfileFeature("tenure_months", "tenure in months", _field("tenure_months"), True),
    ProfileFeature("age", "age", _field("age"), False),
    ProfileFeature("total_events", "events", _field("total_events"), True),
    ProfileFeature("call_partners", "call partners", _field("call_partners"), True),
    ProfileFeature("calls", "calls", _count("call"), True),
    ProfileFeature("app_sessions", "app sessions and clicks", _count("app.usage", "app.click"), True),
    ProfileFeature("product_interest", "product clicks and orders", _count("product.click", "product.order"), True),
    ProfileFeature("spend", "spend", _field("spend"), True),
)
NAMES: tuple[str, ...] = tuple(f.name for f in PROFILE_FEATURES)
LABELS: dict[str, str] = {f.name: f.label for f in PROFILE_FEATURES}
LOG_MASK: np.ndarray = np.array([f.log for f in PROFILE_FEATURES])


def profile_vector(profile: Mapping[str, Any]) -> np.ndarray:
    """The raw feature values of one profile (NaN where the profile lacks a field)."""
    return np.array([f.read(profile) for f in PROFILE_FEATURES], dtype=np.float64)


def profile_matrix(profiles: Sequence[Mapping[str, Any]]) -> np.ndarray:
    if not profiles:
        return np.zeros((0, len(PROFILE_FEATURES)))
    return np.stack([profile_vector(p) for p in profiles])


