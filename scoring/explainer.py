"""SHAP explanations of the fused score: Kernel SHAP (``kernel_shap``: shap's estimator, every coalition in
one batched model call).

The explained function is the fused score over one row of features: the rule indicators (1 = fired),
the profile's numbers (raw values: a fee in CNY, months, counts) and the dimensions of the user's call
neighbourhood (the mean graph embedding of the users within two calls, :mod:`scoring.neighbourhood`). The
rule score is not a feature of its own: the predictor sums the weights of the indicators it is given,
so a rule's contribution holds its share of the rule score as well as its indicator, and since the
score is monotone in every rule (see ``fusion``), a fired rule with a positive weight never lowers it.
Rules with weight 0 cannot change the score and are left out of the game (contribution exactly 0).

* ``per_dimension`` — Kernel SHAP over every feature, ``nsamples`` coalitions (sampled when there are many);
* ``grouped`` — each rule alone, the profile's numbers as one feature ("profile numbers") and the whole
  neighbourhood vector as one ("call neighbourhood"): where the score comes from. With few features Kernel SHAP
  enumerates every coalition, and the weighted regression over all coalitions *is* the exact Shapley value.

Both satisfy additivity: ``base_value + Σ contributions = prediction`` (Kernel SHAP constrains it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.special import expit

from .fusion import FusionCore
from .kernel_shap import KernelShapResult, kernel_shap
from .profile_features import LABELS as PROFILE_LABELS
from .profile_features import NAMES as PROFILE_NAMES

NEIGHBOURHOOD_GROUP = "call neighbourhood"
PROFILE_GROUP = "profile numbers"
#: a call-neighbourhood dimension's feature name is this and its index
DIMENSION_PREFIX = "neighbourhood_"
Mode = Literal["per_dimension", "grouped"]
EXPLAIN_MODES: tuple[str, ...] = ("per_dimension", "grouped")
Kind = Literal["rule", "profile", "neighbourhood"]


def feature_names(rule_names: tuple[str, ...], emb_dim: int) -> list[str]:
    return [*rule_names, *PROFILE_NAMES, *(f"{DIMENSION_PREFIX}{i}" for i in range(emb_dim))]


def feature_kind(name: str, rule_names: tuple[str, ...]) -> Kind:
    if name in rule_names:
        return "rule"
    return "profile" if name in PROFILE_LABELS else "neighbourhood"


@dataclass(slots=True)
class Background:
    """Rows of ``[h_rule, profile, h_nn]`` the contributions are measured against."""

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
    """The fused score as a function of feature rows ``[h_rule, profile, h_nn]`` (raw values; with
    ``standardised`` the profile and embedding columns are already in the model's standardised units)."""

    def __init__(self, model: FusionCore, rule_weights: np.ndarray) -> None:
        self.fusion = model.serving()
        self.n_rules = len(model.rule_structure)
        self.n_profile = len(PROFILE_NAMES)
        self.emb_dim = model.emb_dim
        self.rule_weights = np.asarray(rule_weights, dtype=np.float64).reshape(self.n_rules)

    @property
    def width(self) -> int:
        return self.n_rules + self.n_profile + self.emb_dim

    def __call__(self, x: np.ndarray, standardised: bool = False) -> np.ndarray:
        x = np.asarray(x).reshape(-1, self.width)  # float32 rows stay float32, the model's own precision
        r, p = self.n_rules, self.n_rules + self.n_profile
        f_rule = x[:, :r] @ self.rule_weights
        if standardised:
            return self.fusion.predict_standardised(x[:, r:p], x[:, p:], f_rule)["score"].astype(np.float64)
        return self.fusion.predict(x[:, r:p], x[:, p:], f_rule)["score"].astype(np.float64)

    def coalition_scores(self, take: np.ndarray, x: np.ndarray, background: np.ndarray) -> np.ndarray:
        """The score (standardised units) of every coalition row of ``take`` (True: the column is ``x``'s,
        else the background row's) against every background row, shape (coalitions, background rows).
        Equal to evaluating every mixed row, but the gate's and the rule head's logits are linear in the
        columns and the GNN head's first layer is too, so each is the background row's value plus the
        coalition's changes: one matrix product per part, no mixed rows built."""
        f, r, p = self.fusion, self.n_rules, self.n_rules + self.n_profile
        take = np.asarray(take, dtype=np.float32)
        bg = np.asarray(background, dtype=np.float32)
        delta = np.asarray(x, dtype=np.float32)[None, :] - bg  # (B, W): what taking x's column changes
        zeros_r, zeros_z = np.zeros(r, np.float32), np.zeros(self.emb_dim, np.float32)
        gate_w = np.concatenate([zeros_r, f.gate_x, f.gate_z])
        rule_w = np.concatenate([(self.rule_weights * f.rule_scale).astype(np.float32), f.rule_x, zeros_z])
        gate = bg @ gate_w + f.gate_b + take @ (delta * gate_w).T  # (K, B)
        rule = bg @ rule_w + f.rule_b + take @ (delta * rule_w).T
        n_b, hidden = len(bg), f.w1.shape[1]
        first = delta[:, p:, None] * f.w1[None, :, :]  # (B, D, H): each embedding column's change to the layer
        h = (bg[:, p:] @ f.w1 + f.b1)[None] + (take[:, p:] @ first.transpose(1, 0, 2).reshape(-1, n_b * hidden)
                                               ).reshape(len(take), n_b, hidden)
        nn_logit = np.maximum(h, 0.0) @ f.w2 + f.b2
        g = expit(gate)
        return expit(g * rule + (1 - g) * nn_logit)

    def standardise(self, rows: np.ndarray) -> np.ndarray:
        """Raw feature rows in the model's units: Kernel SHAP then evaluates no log or scaling per coalition.
        Shapley values do not change (each feature is mapped one to one, the same map in every row)."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self.width)
        r, p = self.n_rules, self.n_rules + self.n_profile
        x, z = self.fusion.standardise(rows[:, r:p], rows[:, p:])
        return np.hstack([rows[:, :r], x, z]).astype(np.float64)


@dataclass(slots=True)
class Explanation:
    base_value: float
    prediction: float
    contributions: list[tuple[str, float]]
    exact: bool
    nsamples: int


class Explainer:
    """Explains one feature row at a time against a fixed background."""

    def __init__(self, model: FusionCore, rule_weights: np.ndarray, background: Background, nsamples: int = 0,
                 max_exact_groups: int = 12, seed: int = 0):
        self.predict = FusionPredictor(model, rule_weights)
        self.rule_names = tuple(model.rule_names)
        self.names = feature_names(self.rule_names, model.emb_dim)
        self.background = background
        self.nsamples = nsamples
        self.max_exact_groups = max_exact_groups
        self.seed = seed  # of the coalitions drawn: the same inputs give the same explanation
        r, p = len(self.rule_names), len(self.rule_names) + len(PROFILE_NAMES)
        # a rule of weight 0 moves nothing: not a player (its contribution is 0 by the dummy axiom)
        self.players = [i for i in range(len(self.names)) if i >= r or self.predict.rule_weights[i] != 0]
        self.r, self.p = r, p
        self.background_standardised = self.predict.standardise(background.matrix).astype(np.float32)

    @property
    def groups(self) -> list[tuple[str, np.ndarray]]:
        """Grouped mode's features: columns of the players' matrix (see :meth:`_game`)."""
        at = {col: j for j, col in enumerate(self.players)}
        rules = [(self.names[i], np.array([at[i]])) for i in self.players if i < self.r]
        return [*rules, (PROFILE_GROUP, np.array([at[i] for i in range(self.r, self.p)])),
                (NEIGHBOURHOOD_GROUP, np.array([at[i] for i in range(self.p, len(self.names))]))]

    def row(self, h_rule: np.ndarray, profile: np.ndarray, h_nn: np.ndarray) -> np.ndarray:
        return np.concatenate([h_rule, profile, h_nn]).astype(np.float64)

    def explain(self, x: np.ndarray, mode: Mode) -> Explanation:
        if mode == "grouped":
            return self._grouped(x)
        return self._per_dimension(x)

    def _game(self, x: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        """The score as a function of the players' columns only, the others held at the user's values
        (they cannot move it, so no value changes), with the background and the row restricted to them."""
        cols = np.array(self.players)
        xs = self.predict.standardise(x)[0]
        bg = self.background_standardised
        if len(cols) == len(self.names):
            return lambda rows: self.predict(rows, standardised=True), bg, xs

        def predict(rows: np.ndarray) -> np.ndarray:
            full = np.tile(xs.astype(rows.dtype), (len(rows), 1))
            full[:, cols] = rows
            return self.predict(full, standardised=True)

        return predict, bg[:, cols], xs[cols]

    def _masked(self, x: np.ndarray) -> Any:
        """Kernel SHAP's coalition values over the players' columns through the model's structure
        (:meth:`FusionPredictor.coalition_scores`); the other columns stay at the user's values."""
        cols = np.array(self.players)
        xs = self.predict.standardise(x)[0]

        def masked(take: np.ndarray) -> np.ndarray:
            full = np.ones((len(take), len(self.names)), dtype=bool)
            full[:, cols] = take
            return self.predict.coalition_scores(full, xs, self.background_standardised)

        return masked

    def _per_dimension(self, x: np.ndarray) -> Explanation:
        names = [self.names[i] for i in self.players]
        f, bg, xp = self._game(x)
        ns = self.nsamples or 2 * len(names) + 2048
        res = kernel_shap(f, xp, bg, ns, self.seed, masked=self._masked(x))
        return self._result(res, dict(zip(names, res.phi.tolist())), ns)

    def _grouped(self, x: np.ndarray) -> Explanation:
        groups = self.groups
        f, bg, xp = self._game(x)
        k = len(groups)
        # with every coalition enumerated (2^k - 2 besides the empty and full ones) the answer is exact
        ns = 2**k if k <= self.max_exact_groups else (self.nsamples or 2 * k + 2048)
        res = kernel_shap(f, xp, bg, ns, self.seed, groups=[cols for _, cols in groups], masked=self._masked(x))
        return self._result(res, dict(zip([g for g, _ in groups], res.phi.tolist())), min(ns, 2**k - 2))

    def _result(self, res: KernelShapResult, phi: dict[str, float], ns: int) -> Explanation:
        names = [*self.rule_names, PROFILE_GROUP, NEIGHBOURHOOD_GROUP] if NEIGHBOURHOOD_GROUP in phi else self.names
        contrib = [(n, float(phi.get(n, 0.0))) for n in names]
        return Explanation(res.base_value, res.prediction, contrib, res.exact, ns)


def top_contributions(contrib: list[dict[str, Any]], k: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The k largest positive and the k most negative contributions."""
    pos = sorted((c for c in contrib if c["value"] > 0), key=lambda c: -c["value"])[:k]
    neg = sorted((c for c in contrib if c["value"] < 0), key=lambda c: c["value"])[:k]
    return pos, neg
