"""Training of the :class:`FusionCore` on the planted ``label.observed`` outcome, with held-out AUCs.

Three full-batch stages, each on log-loss and stopped at its best validation loss:

1. the rule head alone (``f_rule'``: calibration of the rule score plus the profile features);
2. the GNN head alone (``f_nn``) — on its own it is the GNN-only baseline, the same architecture the
   fused model uses, so the comparison is like for like;
3. the whole fused model from those two heads, the gate starting at an even mix.

Starting the fused model from its trained heads keeps it from having to find both at once from a handful
of labels (a joint fit from scratch let the gate settle early on whichever side learnt faster and ended
below the better head). The held-out AUCs are of the operator's rule score as it is, the rule head, the
GNN head, the fused score and, when the caller knows it, the oracle: the generator's own latent
propensity, the ceiling any scorer of these labels can reach.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from .errors import NotEnoughData
from .fusion import FusionCore
from .results import FusionAUC, FusionMetrics, FusionStage

Progress = Callable[[float, str], None]


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
    """One row per labelled user: raw profile features, embedding, rule score, retained (1) / churned (0)."""

    user_ids: list[str]
    x: np.ndarray
    h_nn: np.ndarray
    f_rule: np.ndarray
    y: np.ndarray
    split: np.ndarray  # 'train' | 'val' | 'test'
    embedding_missing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: P(retained) the data was generated with, NaN where unknown; None when nobody's is known
    oracle: np.ndarray | None = None

    def part(self, name: str) -> tuple[torch.Tensor, ...]:
        m = self.split == name
        return tuple(torch.as_tensor(a[m], dtype=torch.float32) for a in (self.x, self.h_nn, self.f_rule, self.y))


@dataclass(slots=True)
class FitSettings:
    hidden: int = 32
    epochs: int = 300
    lr: float = 0.01
    weight_decay: float = 0.1
    patience: int = 60
    seed: int = 0


def auc_of(y: np.ndarray, s: np.ndarray) -> float | None:
    keep = np.isfinite(s)
    if len(np.unique(y[keep])) < 2 or keep.sum() < len(s) // 2:
        return None
    return round(float(roc_auc_score(y[keep], s[keep])), 4)


@dataclass(slots=True)
class _Stage:
    label: str
    params: list[tuple[str, nn.Parameter]]  # the stage's parameters; those named *weight are decayed
    loss_of: Callable[[str], torch.Tensor]
    weight_decay: float


def _fit(module: nn.Module, stage: _Stage, fs: FitSettings, epochs: int | None) -> FusionStage:
    """Full-batch Adam. With ``epochs`` None: on the train split until the validation loss has not improved
    for ``patience`` epochs, keeping the best state (its epoch is returned). With ``epochs``: that many on
    train and validation users together (the refit with every labelled user the test leaves)."""
    groups = [{"params": [p], "weight_decay": stage.weight_decay if n.endswith("weight") else 0.0}
              for n, p in stage.params]
    opt = torch.optim.Adam(groups, lr=fs.lr)
    part = "train" if epochs is None else "all"
    best = (math.inf, 0, {k: v.clone() for k, v in module.state_dict().items()})
    for epoch in range(1, (fs.epochs if epochs is None else epochs) + 1):
        module.train()
        opt.zero_grad()
        stage.loss_of(part).backward()
        opt.step()
        if epochs is not None:
            continue
        module.eval()
        with torch.no_grad():
            val = float(stage.loss_of("val"))
        if val < best[0] - 1e-6:
            best = (val, epoch, {k: v.clone() for k, v in module.state_dict().items()})
        if epoch - best[1] > fs.patience:
            break
    module.eval()
    if epochs is None:
        module.load_state_dict(best[2])
        return {"val_loss": round(best[0], 5), "best_epoch": best[1]}
    with torch.no_grad():
        return {"loss": round(float(stage.loss_of("all")), 5)}


def _check_splits(data: TrainingData) -> None:
    for part in ("train", "val", "test") if (data.split == "val").any() else ("train", "test"):
        n = int((data.split == part).sum())
        if n == 0 or len(np.unique(data.y[data.split == part])) < 2:
            raise NotEnoughData(f"the {part} split has {n} labelled users and needs both outcomes; "
                                "label more users or change the held-out shares")


def _decayed(params: Iterable[tuple[str, nn.Parameter]], wd: float) -> list[tuple[nn.Parameter, float]]:
    """Weight decay on weight matrices only (not biases, not the rule score's scale)."""
    return [(p, wd if name.endswith("weight") else 0.0) for name, p in params]


def _test_metrics(model: FusionCore, data: TrainingData, test_tensors: tuple[torch.Tensor, ...],
                  chosen: dict[str, FusionStage], test_scores: dict[str, np.ndarray]) -> FusionMetrics:
    """AUCs and the loss on the test split, the stages' chosen epochs, the split sizes."""
    x, e, f, y = test_tensors
    model.eval()
    with torch.no_grad():
        o = model(x, e, f)
        test_loss = float(nn.functional.binary_cross_entropy(o.score.clamp(1e-6, 1 - 1e-6), y))
    yt = y.numpy()
    test = data.split == "test"
    auc: FusionAUC = {
        "rule": auc_of(yt, data.f_rule[test]), "rule_head": auc_of(yt, test_scores["rule_head"]),
        "gnn": auc_of(yt, test_scores["gnn"]), "fused": auc_of(yt, test_scores["fusion"]),
        "oracle": auc_of(yt, data.oracle[test]) if data.oracle is not None else None,
    }
    metrics: FusionMetrics = {
        "auc": auc,
        "loss": chosen["fusion"]["loss"],
        "test_loss": round(test_loss, 5),
        "stages": chosen,
        "gate_mean_test": round(float(o.gate.mean()), 4),
        "n_train": int((data.split == "train").sum()),
        "n_val": int((data.split == "val").sum()),
        "n_test": int(test.sum()),
        "retained_share": round(float(data.y.mean()), 4),
        "embedding_missing_share": round(float(data.embedding_missing.mean()), 4)
        if len(data.embedding_missing) else 0.0,
        "target": "retention (1 - churn label)",
    }
    return metrics


def train_fusion_core(
    data: TrainingData,
    rule_structure: Sequence[tuple[str, str]],
    fs: FitSettings,
    progress: Progress | None = None,
) -> tuple[FusionCore, FusionMetrics]:
    """Stop each stage on the validation split, fit again on train and validation users for as many
    epochs; AUCs on the test split."""
    _check_splits(data)
    tensors = {p: data.part(p) for p in ("train", "val", "test")}
    tensors["all"] = tuple(torch.cat([a, b]) for a, b in zip(tensors["train"], tensors["val"]))
    fit_rows = data.split != "test"
    bce = nn.BCEWithLogitsLoss()

    def fresh() -> FusionCore:
        with torch.random.fork_rng():  # reproducible init without touching the caller's RNG
            torch.manual_seed(fs.seed)
            m = FusionCore(rule_structure, data.h_nn.shape[1], fs.hidden)
            nn.init.normal_(m.head[2].weight, std=0.01)
        m.fit_scaling(data.x[fit_rows], data.h_nn[fit_rows])
        return m

    def stages(m: FusionCore) -> list[_Stage]:
        def out(p: str) -> tuple[Any, torch.Tensor]:
            x, e, f, y = tensors[p]
            return m(x, e, f), y

        def rule_loss(p: str) -> torch.Tensor:
            o, y = out(p)
            return bce(o.rule_logit, y)

        def gnn_loss(p: str) -> torch.Tensor:
            o, y = out(p)
            return bce(o.nn_logit, y)

        def fused_loss(p: str) -> torch.Tensor:
            o, y = out(p)
            return nn.functional.binary_cross_entropy(o.score.clamp(1e-6, 1 - 1e-6), y)

        rule = [("rule_scale", m.rule_scale_raw), *(("rule_profile." + n, p) for n, p in m.rule_profile.named_parameters())]
        head = [("head." + n, p) for n, p in m.head.named_parameters()]
        gate = [("gate." + n, p) for n, p in m.gate.named_parameters()]
        # the fused stage moves the gate, the rule head and the GNN head's output layer: the heads' logits are
        # re-scaled to be added up; the GNN head's hidden layer stays as fitted alone
        out_layer = [("head.2." + n, p) for n, p in m.head[2].named_parameters()]
        return [_Stage("rule head", rule, rule_loss, 0.01), _Stage("GNN head", head, gnn_loss, fs.weight_decay),
                _Stage("fusion", [*gate, *rule, *out_layer], fused_loss, fs.weight_decay)]

    keys = ("rule_head", "gnn", "fusion")
    chosen: dict[str, FusionStage] = {k: {"best_epoch": fs.epochs} for k in keys}
    if (data.split == "val").any():
        model = fresh()
        for i, (key, stage) in enumerate(zip(keys, stages(model))):
            chosen[key] = _fit(model, stage, fs, None)
            if progress:
                progress((i + 1) / 6, f"{i + 1}/6 fits, {stage.label}: best validation loss {chosen[key]['val_loss']:.4f}")
    model = fresh()
    test_scores: dict[str, np.ndarray] = {}
    x, e, f, y = tensors["test"]
    for i, (key, stage) in enumerate(zip(keys, stages(model))):
        if progress:
            progress((3 + i) / 6, f"{3 + i}/6 fits, {stage.label}: fitting on train and validation users")
        chosen[key].update(_fit(model, stage, fs, max(1, chosen[key]["best_epoch"])))
        with torch.no_grad():
            o = model(x, e, f)
        test_scores[key] = {"rule_head": o.f_rule_calibrated, "gnn": o.f_nn, "fusion": o.score}[key].numpy()
    metrics = _test_metrics(model, data, tensors["test"], chosen, test_scores)
    auc = metrics["auc"]
    if progress:
        progress(1.0, f"6/6 fits, AUC rule {auc['rule']} gnn {auc['gnn']} fused {auc['fused']} oracle {auc['oracle']}")
    return model, metrics
