"""The mock generator's configuration as the generator uses it: sizes, shares, seed, per-user edge ranges,
and the tag that prefixes a dataset's event ids (the generator version is part of it)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from config.generator import MAX_EDGES_PER_USER

from .mock_catalogue import RISK_APPS

#: version of what a config generates; part of the tag, so datasets of different versions never share ids.
#: 2: community app taste; 3: product choice by segment and community, names drawn from a pool;
#: 4: sharper segment tastes over flatter product popularity
GENERATOR_VERSION = 4
#: live events are generated a chunk at a time, each chunk seeded by its number
LIVE_CHUNK = 1024

#: per-user edge ranges of the history: config field -> the interaction type (graph relation) it bounds.
#: A range is (min, max) events of that type per user; max None is no upper limit.
EDGE_RANGES: dict[str, str] = {
    "calls_per_user": "call",
    "orders_per_user": "product.order",
    "product_clicks_per_user": "product.click",
    "app_uses_per_user": "app.usage",
    "app_clicks_per_user": "app.click",
}
EdgeRange = tuple[int, "int | None"]
#: the default: the history as drawn (the dataset stays what it was before ranges existed)
NO_LIMIT: EdgeRange = (0, None)


def as_edge_range(value: Any) -> EdgeRange:
    """(min, max) from a tuple/list, a {"min", "max"} mapping or an object with .min/.max (settings)."""
    if isinstance(value, dict):
        return (value.get("min", 0), value.get("max"))
    if hasattr(value, "min") and hasattr(value, "max") and not isinstance(value, (tuple, list)):
        return (value.min, value.max)
    lo, hi = value
    return (lo, hi)


def edge_range_problem(name: str, value: EdgeRange) -> str | None:
    lo, hi = value
    if isinstance(lo, bool) or not isinstance(lo, int) or not 0 <= lo <= MAX_EDGES_PER_USER:
        return f"{name} min must be a whole number within [0, {MAX_EDGES_PER_USER}]"
    if hi is not None and (isinstance(hi, bool) or not isinstance(hi, int) or not 0 <= hi <= MAX_EDGES_PER_USER):
        return f"{name} max must be a whole number within [0, {MAX_EDGES_PER_USER}] or none"
    if hi is not None and lo > hi:
        return f"{name} min ({lo}) must be <= max ({hi})"
    return None


@dataclass(frozen=True)
class GeneratorConfig:
    users: int = 2000
    products: int = 60
    apps: int = 40
    events_per_user: float = 20.0
    history_days: float = 30.0
    community_size: int = 40
    label_share: float = 0.6
    seed: int = 42
    locale: str = "zh_CN"
    history_end: float = 1_767_225_600.0
    new_user_share: float = 0.002
    #: per-user edge ranges of the history (see EDGE_RANGES); live events are not bounded
    calls_per_user: EdgeRange = NO_LIMIT
    orders_per_user: EdgeRange = NO_LIMIT
    product_clicks_per_user: EdgeRange = NO_LIMIT
    app_uses_per_user: EdgeRange = NO_LIMIT
    app_clicks_per_user: EdgeRange = NO_LIMIT

    def __post_init__(self) -> None:
        # the tag hashes the fields' JSON, where 5 and 5.0 differ: one number, one tag
        for name in ("events_per_user", "history_days", "label_share", "history_end", "new_user_share"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
        problems = []
        for name in EDGE_RANGES:
            try:
                value = as_edge_range(getattr(self, name))
            except (TypeError, ValueError):
                problems.append(f"{name} must be a (min, max) pair")
                continue
            object.__setattr__(self, name, value)  # frozen: normalise lists and mappings once
            if (problem := edge_range_problem(name, value)) is not None:
                problems.append(problem)
        if self.users < 2:
            problems.append("users must be at least 2")
        if self.products < 1:
            problems.append("products must be at least 1")
        if self.apps < len(RISK_APPS) + 1:
            problems.append(f"apps must be at least {len(RISK_APPS) + 1}")
        if self.events_per_user < 0:
            problems.append("events_per_user must be >= 0")
        if not 0 <= self.label_share <= 1:
            problems.append("label_share must be within [0, 1]")
        if not 0 <= self.new_user_share <= 1:
            problems.append("new_user_share must be within [0, 1]")
        if self.history_days <= 0:
            problems.append("history_days must be > 0")
        if self.community_size < 2:
            problems.append("community_size must be at least 2")
        if problems:
            raise ValueError("invalid generator config: " + "; ".join(problems))

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> "GeneratorConfig":
        fields = {k: getattr(settings, k) for k in cls.__dataclass_fields__ if hasattr(settings, k)}
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**fields)

    @property
    def communities(self) -> int:
        """How many call-graph communities the users form."""
        return max(1, self.users // self.community_size)

    @property
    def edge_ranges(self) -> dict[str, EdgeRange]:
        """The ranges that bound something (not NO_LIMIT), by interaction type."""
        return {t: getattr(self, f) for f, t in EDGE_RANGES.items() if getattr(self, f) != NO_LIMIT}

    @property
    def tag(self) -> str:
        """Short hash of the config: prefixes event ids so two datasets never share an id.

        Unbounded edge ranges are left out, so a config without ranges has the tag (and event ids) it
        had before ranges existed; the generator version is in it."""
        doc: dict[str, Any] = {k: v for k, v in asdict(self).items() if not (k in EDGE_RANGES and v == NO_LIMIT)}
        doc["generator_version"] = GENERATOR_VERSION
        text = json.dumps(doc, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:8]
