"""SHAP explanations of the fused score, with ``shap.KernelExplainer``.

The explained function is the fused model's prediction over ``[h_rule, h_nn, f_rule]``: features are the
rule names, ``emb_0 … emb_{d-1}`` and ``rule_score``. Two modes:

* ``per_dimension`` — Kernel SHAP over every feature, ``nsamples`` coalitions (sampled when there are many);
* ``grouped`` — the whole embedding is one feature, "graph embedding"; with few features Kernel SHAP
  enumerates every coalition, and the weighted regression over all coalitions *is* the exact Shapley value.

Both satisfy additivity: ``base_value + Σ contributions = prediction`` (Kernel SHAP constrains it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import shap
from shap.utils._legacy import DenseData

from .fusion import FusionCore

RULE_SCORE = "rule_score"
EMBEDDING_GROUP = "graph embedding"
Mode = Literal["per_dimension", "grouped"]
EXPLAIN_MODES: tuple[str, ...] = ("per_dimension", "grouped")


def feature_names(rule_names: tuple[str, ...], emb_dim: int) -> list[str]:
    return [*rule_names, *(f"emb_{i}" for i in range(emb_dim)), RULE_SCORE]


@dataclass(slots=True)
class Background:
    """Rows of ``[h_rule, h_nn, f_rule]`` the contributions are measured against."""

    matrix: np.ndarray
    source: Literal["configured", "sample", "zeros"]
    user_ids: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        notes = {
            "configured": "configured background user ids",
            "sample": "a reproducible sample of stored users",
            "zeros": "no stored users to sample: a single all-zero row (explanations are less stable)",
        }
        d: dict[str, Any] = {"source": self.source, "size": int(self.matrix.shape[0]), "note": notes[self.source]}
        if self.missing:
            d["missing_ids"] = self.missing
        return d


class FusionPredictor:
    """The fused score as a function of feature rows (what Kernel SHAP calls)."""

    def __init__(self, model: FusionCore) -> None:
        self.fusion = model.serving()
        self.n_rules = len(model.rule_structure)
        self.emb_dim = model.emb_dim

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(-1, self.n_rules + self.emb_dim + 1)
        r, e = self.n_rules, self.n_rules + self.emb_dim
        return self.fusion.predict(x[:, :r], x[:, r:e], x[:, e])["score"].astype(np.float64)


@dataclass(slots=True)
class Explanation:
    base_value: float
    prediction: float
    contributions: list[tuple[str, float]]
    exact: bool
    nsamples: int


class Explainer:
    """Explains one feature row at a time against a fixed background."""

    def __init__(self, model: FusionCore, background: Background, nsamples: int = 0, max_exact_groups: int = 12):
        self.predict = FusionPredictor(model)
        self.rule_names = tuple(model.rule_names)
        self.names = feature_names(self.rule_names, model.emb_dim)
        self.background = background
        self.nsamples = nsamples
        self.max_exact_groups = max_exact_groups
        r = len(self.rule_names)
        self.groups: list[tuple[str, np.ndarray]] = [
            *((name, np.array([i])) for i, name in enumerate(self.rule_names)),
            (EMBEDDING_GROUP, np.arange(r, r + model.emb_dim)),
            (RULE_SCORE, np.array([r + model.emb_dim])),
        ]

    def row(self, h_rule: np.ndarray, h_nn: np.ndarray, f_rule: float) -> np.ndarray:
        return np.concatenate([h_rule, h_nn, [f_rule]]).astype(np.float64)

    def explain(self, x: np.ndarray, mode: Mode) -> Explanation:
        if mode == "grouped":
            return self._grouped(x)
        return self._per_dimension(x)

    def _per_dimension(self, x: np.ndarray) -> Explanation:
        # a fresh KernelExplainer per call: explain() keeps per-call state on the object (not thread-safe)
        kx = shap.KernelExplainer(self.predict, self.background.matrix, feature_names=self.names)
        m = len(self.names)
        ns = self.nsamples or 2 * m + 2048
        phi = np.asarray(kx.shap_values(x[None, :], nsamples=ns, l1_reg=False, silent=True)).reshape(-1)
        exact = m <= 30 and ns >= 2**m - 2
        return self._result(kx, x, list(zip(self.names, phi.tolist())), exact, ns)

    def _grouped(self, x: np.ndarray) -> Explanation:
        names = [g for g, _ in self.groups]
        data = DenseData(self.background.matrix, names, [cols for _, cols in self.groups])
        kx = shap.KernelExplainer(self.predict, data)
        k = len(names)
        exact = k <= self.max_exact_groups
        # with every coalition enumerated (2^k - 2 besides the empty and full ones) the answer is exact
        ns = 2**k if exact else (self.nsamples or 2 * k + 2048)
        phi = np.asarray(kx.shap_values(x[None, :], nsamples=ns, l1_reg=False, silent=True)).reshape(-1)
        return self._result(kx, x, list(zip(names, phi.tolist())), exact, min(ns, 2**k - 2))

    def _result(
        self, kx: shap.KernelExplainer, x: np.ndarray, contrib: list[tuple[str, float]], exact: bool, ns: int
    ) -> Explanation:
        return Explanation(float(kx.expected_value), float(self.predict(x)[0]), contrib, exact, ns)


def top_contributions(contrib: list[tuple[str, float]], k: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The k largest positive and the k most negative contributions."""
    pos = sorted((c for c in contrib if c[1] > 0), key=lambda c: -c[1])[:k]
    neg = sorted((c for c in contrib if c[1] < 0), key=lambda c: c[1])[:k]
    return [{"feature": f, "value": v} for f, v in pos], [{"feature": f, "value": v} for f, v in neg]
