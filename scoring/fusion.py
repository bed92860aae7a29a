"""``FusionCore`` (the gated fusion of rules and embeddings) and its training on the planted ``label.observed`` outcome.

    g     = σ(W_rule·h_rule + W_emb·z + c)            z = standardised embedding h_nn
    f_nn  = σ(MLP(z))
    f̂_rule = σ(a·f_rule + b)                          learned affine calibration of the rule score
    score = g·f̂_rule + (1 − g)·f_nn

``W = [W_rule, W_emb]`` is one weight ``W[h_rule, h_nn]`` kept as two blocks so that a change of the rule
structure rebuilds the rule side (``W_rule``; the columns of rules that did not change are carried over)
and keeps the embedding side (``W_emb``, ``c``, the MLP, the standardisation). ``f_rule`` is a sum of rule
weights on whatever scale the operator chose; the calibration (two parameters, monotone, so rule-only AUC
is unchanged) puts it on the probability scale of ``f_nn`` so that the convex mix is itself a probability.

The target is retention: the score estimates P(the subscriber stays) = 1 − P(churn), so rules with positive
weights (high value, loyal) and negative ones (at risk of churn) keep their meaning.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy.special import expit
from sklearn.metrics import roc_auc_score
from torch import nn

from config.progress import Progress

from .errors import NotEnoughData


@dataclass(slots=True)
class FusionOutput:
    score: torch.Tensor
    gate: torch.Tensor
    f_rule_calibrated: torch.Tensor
    f_nn: torch.Tensor


class FusionCore(nn.Module):
    """Gated mix of the calibrated rule score and an MLP on the graph embedding."""

    def __init__(self, rule_structure: Sequence[tuple[str, str]], emb_dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.rule_structure: tuple[tuple[str, str], ...] = tuple((str(n), str(c)) for n, c in rule_structure)
        self.emb_dim = int(emb_dim)
        self.hidden = int(hidden)
        # rule side
        self.gate_rule = nn.Parameter(torch.zeros(len(self.rule_structure)))
        self.rule_scale = nn.Parameter(torch.tensor(1.0))
        self.rule_shift = nn.Parameter(torch.tensor(0.0))
        # embedding side; zero output layers: an untrained core gives g = 0.5, f_nn = 0.5 for everyone
        self.gate_emb = nn.Linear(self.emb_dim, 1)
        self.head = nn.Sequential(nn.Linear(self.emb_dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1))
        for lin in (self.gate_emb, self.head[2]):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.register_buffer("emb_mean", torch.zeros(self.emb_dim))
        self.register_buffer("emb_std", torch.ones(self.emb_dim))

    @property
    def rule_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.rule_structure)

    def config(self) -> dict[str, Any]:
        return {"rule_structure": [list(x) for x in self.rule_structure], "emb_dim": self.emb_dim,
                "hidden": self.hidden}

    def standardise(self, h_nn: torch.Tensor) -> torch.Tensor:
        return (h_nn - self.emb_mean) / self.emb_std

    def nn_logit(self, h_nn: torch.Tensor) -> torch.Tensor:
        return self.head(self.standardise(h_nn)).squeeze(-1)

    def forward(self, h_rule: torch.Tensor, h_nn: torch.Tensor, f_rule: torch.Tensor) -> FusionOutput:
        z = self.standardise(h_nn)
        gate = torch.sigmoid(h_rule @ self.gate_rule + self.gate_emb(z).squeeze(-1))
        f_rule_cal = torch.sigmoid(self.rule_scale * f_rule + self.rule_shift)
        f_nn = torch.sigmoid(self.head(z).squeeze(-1))
        return FusionOutput(gate * f_rule_cal + (1 - gate) * f_nn, gate, f_rule_cal, f_nn)

    @torch.no_grad()
    def serving(self) -> "ServingFusion":
        """The same function as numpy arrays, for scoring: no autograd or module dispatch per call."""
        def a(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy().astype(np.float32)

        return ServingFusion(
            gate_rule=a(self.gate_rule), gate_emb_w=a(self.gate_emb.weight[0]), gate_emb_b=float(self.gate_emb.bias),
            rule_scale=float(self.rule_scale), rule_shift=float(self.rule_shift),
            w1=a(self.head[0].weight.T), b1=a(self.head[0].bias), w2=a(self.head[2].weight[0]),
            b2=float(self.head[2].bias), mean=a(self.emb_mean), std=a(self.emb_std),
        )

    def with_rules(self, rule_structure: Sequence[tuple[str, str]]) -> "FusionCore":
        """A copy for a new rule structure: rule-side gate weights rebuilt (unchanged rules keep theirs,
        new ones start at 0), calibration and every embedding-side weight kept."""
        new = FusionCore(rule_structure, self.emb_dim, self.hidden)
        state = {k: v for k, v in self.state_dict().items() if k != "gate_rule"}
        new.load_state_dict({**state, "gate_rule": new.gate_rule.detach().clone()})
        old = {rule: i for i, rule in enumerate(self.rule_structure)}
        with torch.no_grad():
            for j, rule in enumerate(new.rule_structure):
                if rule in old:
                    new.gate_rule[j] = self.gate_rule[old[rule]]
        return new.eval()

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, config: dict[str, Any], blob: bytes) -> "FusionCore":
        model = cls([tuple(x) for x in config["rule_structure"]], config["emb_dim"], config["hidden"])
        model.load_state_dict(torch.load(io.BytesIO(blob), weights_only=True))
        return model.eval()


@dataclass(frozen=True, slots=True)
class ServingFusion:
    """A :class:`FusionCore`'s weights as float32 arrays and its forward pass in numpy (about 20 µs for one
    user against ~100 µs through torch); tests check it equals the torch forward."""

    gate_rule: np.ndarray
    gate_emb_w: np.ndarray
    gate_emb_b: float
    rule_scale: float
    rule_shift: float
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: float
    mean: np.ndarray
    std: np.ndarray

    def predict(self, h_rule: np.ndarray, h_nn: np.ndarray, f_rule: np.ndarray) -> dict[str, np.ndarray]:
        """Rows are users: score, gate, calibrated rule score, GNN score."""
        z = (np.asarray(h_nn, dtype=np.float32) - self.mean) / self.std
        gate = expit(np.asarray(h_rule, dtype=np.float32) @ self.gate_rule + z @ self.gate_emb_w + self.gate_emb_b)
        cal = expit(self.rule_scale * np.asarray(f_rule, dtype=np.float32) + self.rule_shift)
        f_nn = expit(np.maximum(z @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2)
        return {"score": gate * cal + (1 - gate) * f_nn, "gate": gate, "f_rule_calibrated": cal, "f_nn": f_nn}


# --------------------------------------------------------------------------- training


def hash01(user_id: str, seed: int) -> float:
    """A reproducible uniform number in [0, 1) per (user, seed)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{user_id}".encode(), digest_size=8).digest(), "big") / 2**64


def split_of(user_id: str, seed: int, test_share: float, val_share: float) -> str:
    """'train' | 'val' | 'test', a pure function of the user id: the same users are held out every time."""
    u = hash01(user_id, seed)
    if u < test_share:
        return "test"
    return "val" if u < test_share + val_share else "train"


@dataclass(slots=True)
class TrainingData:
    """One row per labelled user: rule vector, embedding, rule score, retained (1) / churned (0)."""

    user_ids: list[str]
    h_rule: np.ndarray
    h_nn: np.ndarray
    f_rule: np.ndarray
    y: np.ndarray
    split: np.ndarray  # 'train' | 'val' | 'test'
    embedding_missing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def part(self, name: str) -> tuple[torch.Tensor, ...]:
        m = self.split == name
        return tuple(torch.as_tensor(a[m], dtype=torch.float32) for a in (self.h_rule, self.h_nn, self.f_rule, self.y))


@dataclass(slots=True)
class FitSettings:
    hidden: int = 32
    epochs: int = 300
    lr: float = 0.01
    weight_decay: float = 0.1
    patience: int = 60
    seed: int = 0


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2 or not np.all(np.isfinite(s)):
        return None
    return round(float(roc_auc_score(y, s)), 4)


def _fit(
    module: nn.Module,
    loss_of: Callable[[str], torch.Tensor],
    fs: FitSettings,
    progress: Progress | None,
    label: str,
    share: tuple[float, float],
    early_stopping: bool,
) -> dict[str, Any]:
    """Full-batch Adam; with early stopping the state of the best validation loss is kept, without it the
    last one (the weight-decay-regularised optimum the run converged to)."""
    # weight decay on the embedding-side weight matrices only: shrinking the calibration or the rule gate
    # would erase the rule signal, which has just a handful of parameters and cannot overfit
    decayed = [p for n, p in module.named_parameters() if n.startswith(("head.", "gate_emb.")) and n.endswith("weight")]
    rest = [p for n, p in module.named_parameters() if not any(p is q for q in decayed)]
    opt = torch.optim.Adam([{"params": decayed, "weight_decay": fs.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                           lr=fs.lr)
    best = (math.inf, 0, {k: v.clone() for k, v in module.state_dict().items()})
    history: list[float] = []
    epoch = 0
    for epoch in range(1, fs.epochs + 1):
        module.train()
        opt.zero_grad()
        loss = loss_of("train")
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        module.eval()
        if progress and (epoch % 10 == 0 or epoch == fs.epochs):
            progress(share[0] + share[1] * epoch / fs.epochs, f"{label}: epoch {epoch}/{fs.epochs} loss {loss:.4f}")
        if not early_stopping:
            continue
        with torch.no_grad():
            val = float(loss_of("val"))
        if val < best[0] - 1e-6:
            best = (val, epoch, {k: v.clone() for k, v in module.state_dict().items()})
        if epoch - best[1] > fs.patience:
            break
    if early_stopping:
        module.load_state_dict(best[2])
    else:
        with torch.no_grad():
            best = (float(loss_of("train")), epoch, {})
    module.eval()
    with torch.no_grad():
        train_loss = float(loss_of("train"))
    return {"loss": round(train_loss, 5), "val_loss": round(best[0], 5), "best_epoch": best[1],
            "epochs_run": epoch, "loss_history": [round(x, 5) for x in history[:: max(1, len(history) // 50)]]}


def train_fusion_core(
    data: TrainingData,
    rule_structure: Sequence[tuple[str, str]],
    fs: FitSettings,
    progress: Progress | None = None,
) -> tuple[FusionCore, dict[str, Any]]:
    """Train the fused model and a GNN-only baseline on the train split; AUCs on the held-out test users."""
    has_val = bool((data.split == "val").any())
    for part in ("train", "val", "test") if has_val else ("train", "test"):
        n = int((data.split == part).sum())
        if n == 0 or len(np.unique(data.y[data.split == part])) < 2:
            raise NotEnoughData(f"the {part} split has {n} labelled users and needs both outcomes; "
                                "label more users or lower the held-out share")
    tensors = {p: data.part(p) for p in ("train", "val", "test")}
    emb_dim = data.h_nn.shape[1]
    train_nn = tensors["train"][1]
    mean = train_nn.mean(0)
    std = train_nn.std(0).clamp_min(1e-6) if len(train_nn) > 1 else torch.ones(emb_dim)
    bce = nn.BCELoss()
    bce_logits = nn.BCEWithLogitsLoss()

    with torch.random.fork_rng():  # reproducible init without touching the caller's RNG
        torch.manual_seed(fs.seed)
        model = FusionCore(rule_structure, emb_dim, fs.hidden)
        nn.init.normal_(model.head[2].weight, std=0.01)
        baseline = FusionCore((), emb_dim, fs.hidden)  # GNN-only: its f_nn branch alone
    for m in (model, baseline):
        m.emb_mean.copy_(mean)
        m.emb_std.copy_(std)

    def fused_loss(p: str) -> torch.Tensor:
        h, e, f, y = tensors[p]
        return bce(model(h, e, f).score.clamp(1e-6, 1 - 1e-6), y)

    def gnn_loss(p: str) -> torch.Tensor:
        _, e, _, y = tensors[p]
        return bce_logits(baseline.nn_logit(e), y)

    fit = _fit(model, fused_loss, fs, progress, "fusion", (0.0, 0.7), has_val)
    base_fit = _fit(baseline, gnn_loss, fs, progress, "gnn-only baseline", (0.7, 0.3), has_val)
    h, e, f, y = tensors["test"]
    with torch.no_grad():
        out = model(h, e, f)
        test_loss = float(bce(out.score.clamp(1e-6, 1 - 1e-6), y))
        gnn_scores = torch.sigmoid(baseline.nn_logit(e)).numpy()
    yt = y.numpy()
    auc = {"rule": _auc(yt, f.numpy()), "gnn": _auc(yt, gnn_scores), "fused": _auc(yt, out.score.numpy())}
    metrics = {
        "auc": auc,
        "auc_fused_f_nn": _auc(yt, out.f_nn.numpy()),
        **fit,
        "test_loss": round(test_loss, 5),
        "gnn_baseline": base_fit,
        "gate_mean_test": round(float(out.gate.mean()), 4),
        "n_train": int((data.split == "train").sum()),
        "n_val": int((data.split == "val").sum()),
        "n_test": int((data.split == "test").sum()),
        "retained_share": round(float(data.y.mean()), 4),
        "embedding_missing_share": round(float(data.embedding_missing.mean()), 4)
        if len(data.embedding_missing) else 0.0,
        "target": "retention (1 - churn label)",
    }
    if progress:
        progress(1.0, f"AUC rule {auc['rule']} gnn {auc['gnn']} fused {auc['fused']}")
    return model, metrics
