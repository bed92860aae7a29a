"""``FusionCore``: the gated fusion of a calibrated rule head and a GNN head, and its numpy serving form.

    x      = standardised profile features (log1p of the skewed ones)       see ``profile_features``
    z      = standardised h_nn: the mean HGT embedding of the user's call neighbourhood  see ``neighbourhood``
    h_rule = x                                                              the rule side's vector
    g      = σ(W[h_rule, h_nn]) = σ(W_x·x + W_z·z + c)
    f_rule' = σ(a·f_rule + v·x + b),  a = softplus(·) ≥ 0                  calibrated rule head
    f_nn   = σ(MLP(z))
    score  = σ(g·logit f_rule' + (1 − g)·logit f_nn)                    the gated mix, in logit space

``f_rule`` is the operator's rule score (the sum of the weights of the rules that fired); the rule head
puts it on the probability scale and adds what the profile's numbers say beyond the rules. The rule
indicators reach the score only through ``f_rule`` with ``a ≥ 0`` and the gate does not read them, so a
fired rule with a positive weight can only raise the score (and one with a negative weight only lower
it) whatever else the user looks like: the score is monotone in every rule, as an operator expects.
The mix is taken in logit space: each head's logit is evidence on the same scale, so where both sides
know something (the profile says low value, the graph says a churning community) the evidence adds up,
which a mix of probabilities cannot do (it always lies between the two). A change of the rules therefore needs no new weights; the calibration learned on other rules is kept
until the fusion is trained again (``rule_side_rebuilt`` says so).

The target is retention: the score estimates P(the subscriber stays) = 1 − P(churn), so rules with positive
weights (high value, loyal) and negative ones (at risk of churn) keep their meaning.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from scipy.special import expit
from torch import nn
from torch.nn import functional as F

from .profile_features import LOG_MASK, NAMES as PROFILE_NAMES

#: layout of the stored weights and meaning of their inputs; a stored model of another layout is not loaded
#: (train the fusion again). 3: h_nn is the call neighbourhood's embedding, no longer the user's own
FORMAT = 3


@dataclass(slots=True)
class FusionOutput:
    score: torch.Tensor
    gate: torch.Tensor
    f_rule_calibrated: torch.Tensor
    f_nn: torch.Tensor
    rule_logit: torch.Tensor
    nn_logit: torch.Tensor


class FusionCore(nn.Module):
    """Gated mix of the calibrated rule head and an MLP on the call neighbourhood's embedding."""

    def __init__(self, rule_structure: Sequence[tuple[str, str]], emb_dim: int, hidden: int = 32,
                 profile_features: Sequence[str] = PROFILE_NAMES) -> None:
        super().__init__()
        self.rule_structure: tuple[tuple[str, str], ...] = tuple((str(n), str(c)) for n, c in rule_structure)
        self.profile_features: tuple[str, ...] = tuple(profile_features)
        if self.profile_features != PROFILE_NAMES:
            raise ValueError(f"fusion profile features {self.profile_features} are not this version's {PROFILE_NAMES}")
        self.emb_dim = int(emb_dim)
        self.hidden = int(hidden)
        n_x = len(self.profile_features)
        # rule head: softplus(0.5413) = 1, so an untrained head is σ(f_rule)
        self.rule_scale_raw = nn.Parameter(torch.tensor(0.5413))
        self.rule_profile = nn.Linear(n_x, 1)
        # gate and GNN head; zero output layers: an untrained core gives g = 0.5, f_nn = 0.5 for everyone
        self.gate = nn.Linear(n_x + self.emb_dim, 1)
        self.head = nn.Sequential(nn.Linear(self.emb_dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1))
        for lin in (self.gate, self.head[2], self.rule_profile):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.register_buffer("emb_mean", torch.zeros(self.emb_dim))
        self.register_buffer("emb_std", torch.ones(self.emb_dim))
        self.register_buffer("x_mean", torch.zeros(n_x))
        self.register_buffer("x_std", torch.ones(n_x))
        self.register_buffer("log_mask", torch.as_tensor(LOG_MASK))

    @property
    def rule_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.rule_structure)

    @property
    def rule_scale(self) -> torch.Tensor:
        return F.softplus(self.rule_scale_raw)

    def config(self) -> dict[str, Any]:
        return {"format": FORMAT, "rule_structure": [list(x) for x in self.rule_structure], "emb_dim": self.emb_dim,
                "hidden": self.hidden, "profile_features": list(self.profile_features)}

    def fit_scaling(self, x_raw: np.ndarray, h_nn: np.ndarray) -> None:
        """Standardisation of both inputs from the training rows."""
        t = self.log_transform(torch.as_tensor(x_raw, dtype=torch.float32))
        e = torch.as_tensor(h_nn, dtype=torch.float32)
        with torch.no_grad():
            for rows, mean, std in ((t, self.x_mean, self.x_std), (e, self.emb_mean, self.emb_std)):
                if len(rows) > 1:
                    mean.copy_(torch.nanmean(rows, 0).nan_to_num(0.0))
                    centred = (rows - mean).nan_to_num(0.0)
                    std.copy_(centred.pow(2).mean(0).sqrt().clamp_min(1e-6))

    def log_transform(self, x_raw: torch.Tensor) -> torch.Tensor:
        return torch.where(self.log_mask, torch.log1p(x_raw.clamp_min(0.0)), x_raw)

    def standardise_profile(self, x_raw: torch.Tensor) -> torch.Tensor:
        # a missing value (NaN) sits at the training mean
        return ((self.log_transform(x_raw) - self.x_mean) / self.x_std).nan_to_num(0.0)

    def standardise(self, h_nn: torch.Tensor) -> torch.Tensor:
        return (h_nn - self.emb_mean) / self.emb_std

    def forward(self, x_raw: torch.Tensor, h_nn: torch.Tensor, f_rule: torch.Tensor) -> FusionOutput:
        x = self.standardise_profile(x_raw)
        z = self.standardise(h_nn)
        gate = torch.sigmoid(self.gate(torch.cat([x, z], dim=-1)).squeeze(-1))
        rule_logit = self.rule_scale * f_rule + self.rule_profile(x).squeeze(-1)
        nn_logit = self.head(z).squeeze(-1)
        f_rule_cal, f_nn = torch.sigmoid(rule_logit), torch.sigmoid(nn_logit)
        score = torch.sigmoid(gate * rule_logit + (1 - gate) * nn_logit)
        return FusionOutput(score, gate, f_rule_cal, f_nn, rule_logit, nn_logit)

    @torch.no_grad()
    def serving(self) -> "ServingFusion":
        """The same function as numpy arrays, for scoring: no autograd or module dispatch per call."""
        def a(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy().astype(np.float32)

        n_x = len(self.profile_features)
        return ServingFusion(
            gate_x=a(self.gate.weight[0, :n_x]), gate_z=a(self.gate.weight[0, n_x:]), gate_b=float(self.gate.bias),
            rule_scale=float(self.rule_scale), rule_x=a(self.rule_profile.weight[0]),
            rule_b=float(self.rule_profile.bias),
            w1=a(self.head[0].weight.T), b1=a(self.head[0].bias), w2=a(self.head[2].weight[0]),
            b2=float(self.head[2].bias), emb_mean=a(self.emb_mean), emb_std=a(self.emb_std),
            x_mean=a(self.x_mean), x_std=a(self.x_std), log_mask=self.log_mask.cpu().numpy(),
        )

    def with_rules(self, rule_structure: Sequence[tuple[str, str]]) -> "FusionCore":
        """A copy for a new rule structure: every weight is kept (none belongs to a single rule)."""
        new = FusionCore(rule_structure, self.emb_dim, self.hidden, self.profile_features)
        new.load_state_dict(self.state_dict())
        return new.eval()

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, config: dict[str, Any], blob: bytes) -> "FusionCore":
        """Raises ValueError for weights of another layout (an older UPS's fusion)."""
        if config.get("format") != FORMAT:
            raise ValueError(f"stored fusion has weight layout {config.get('format', 1)}, this version reads {FORMAT}")
        model = cls([tuple(x) for x in config["rule_structure"]], config["emb_dim"], config["hidden"],
                    config["profile_features"])
        model.load_state_dict(torch.load(io.BytesIO(blob), weights_only=True))
        return model.eval()


@dataclass(frozen=True, slots=True)
class ServingFusion:
    """A :class:`FusionCore`'s weights as float32 arrays and its forward pass in numpy (tens of µs for one
    user against ~100 µs through torch); tests check it equals the torch forward."""

    gate_x: np.ndarray
    gate_z: np.ndarray
    gate_b: float
    rule_scale: float
    rule_x: np.ndarray
    rule_b: float
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: float
    emb_mean: np.ndarray
    emb_std: np.ndarray
    x_mean: np.ndarray
    x_std: np.ndarray
    log_mask: np.ndarray

    def profile_part(self, x_raw: np.ndarray) -> np.ndarray:
        x = np.asarray(x_raw, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            t = np.where(self.log_mask, np.log1p(np.maximum(x, 0.0)), x)
        return np.nan_to_num((t - self.x_mean) / self.x_std, nan=0.0)

    def standardise(self, x_raw: np.ndarray, h_nn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's own view of the inputs: standardised profile features and embedding."""
        return self.profile_part(x_raw), (np.asarray(h_nn, dtype=np.float32) - self.emb_mean) / self.emb_std

    def predict(self, x_raw: np.ndarray, h_nn: np.ndarray, f_rule: np.ndarray) -> dict[str, np.ndarray]:
        """Rows are users (raw profile features, embedding, rule score): score, gate, calibrated rule score,
        GNN score."""
        return self.predict_standardised(*self.standardise(x_raw, h_nn), f_rule)

    def predict_standardised(self, x: np.ndarray, z: np.ndarray, f_rule: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`predict` on already standardised inputs (what SHAP evaluates thousands of rows of)."""
        x = np.asarray(x, dtype=np.float32)
        z = np.asarray(z, dtype=np.float32)
        gate = expit(x @ self.gate_x + z @ self.gate_z + self.gate_b)
        rule_logit = self.rule_scale * np.asarray(f_rule, dtype=np.float32) + x @ self.rule_x + self.rule_b
        nn_logit = np.maximum(z @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2
        score = expit(gate * rule_logit + (1 - gate) * nn_logit)
        return {"score": score, "gate": gate, "f_rule_calibrated": expit(rule_logit), "f_nn": expit(nn_logit)}
