"""The model's long operations end to end: the initial model, a graph refresh, HGT and fusion training.

Each takes the settings, its parameters and a :data:`~config.progress.Progress` and returns a
typed report (:mod:`scoring.operation_results`: durations, sample ratio, node counts, HGT loss history, fusion metrics). The API's
job workers, the CLI and ``ups init`` all run them from here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from config.progress import Progress, part, stage
from config.settings import Settings

from .operation_results import FusionJob, GraphRefreshed, HgtJob, InitialModel, ModelUpgraded

if TYPE_CHECKING:
    from .graph import HeteroGraph
    from .results import FusionTrained
    from .graph_cache import GraphCache

#: P(retained) per user id as the data was generated (NaN where unknown): the oracle AUC fusion training
#: reports; the mock generator's package provides it (``dataflow.oracle``), a real feed has none
Oracle = Callable[[Sequence[str]], np.ndarray]


def train_fusion(settings: Settings, progress: Progress, *, samples: int, epochs: int, lr: float,
                 oracle: Oracle | None = None) -> FusionTrained:
    """Fusion training (with the oracle AUC when an oracle is given)."""
    from .service import ScoringService

    with ScoringService(settings) as svc:
        return svc.train_fusion(samples=samples, epochs=epochs, lr=lr, progress=progress, oracle=oracle)


def _read_graph(settings: Settings, progress: Progress) -> HeteroGraph:
    """The store's whole graph on the settings' device, its progress counted in events read."""
    from config.device import resolve_device
    from storage import open_store

    from .graph_loader import build_graph

    with open_store(settings.db) as store:
        last = store.last_seq()
        return build_graph(store, device=resolve_device(settings.device), compact_min=settings.graph_compact_min,
                           progress=lambda f, m: progress(f, f"{round(f * last):,}/{last:,} events"))


def initial_model(settings: Settings, progress: Progress, *, epochs: int, fusion_epochs: int,
                  train_ratio: float = 1.0, train_mode: str | None = None, oracle: Oracle | None = None) -> InitialModel:
    """HGT training (on a share of the users, in ``train_mode``, None: the settings'), embeddings of every
    node, then the fusion layer: a usable model from scratch."""
    from .embed import embed_all
    from .training import train_hgt

    # the store's graph is read once: training cuts its users' sample from it, the embeddings use it whole
    graph = _read_graph(settings, stage(progress, "graph", 0.0, 0.1))
    hgt = train_hgt(settings, epochs=epochs, sample_ratio=train_ratio, mode=train_mode,
                    progress=stage(progress, "train", 0.1, 0.6), graph=graph)
    emb = embed_all(settings, sample_ratio=1.0, progress=stage(progress, "embed", 0.6, 0.8), graph=graph)
    del graph
    fusion = train_fusion(settings, stage(progress, "fusion", 0.8, 1.0), samples=settings.bootstrap_fusion_samples,
                          epochs=fusion_epochs, lr=settings.fusion_lr, oracle=oracle)
    return InitialModel(hgt=hgt, embeddings=emb, fusion=fusion)


@dataclass(frozen=True)
class Outdated:
    """What a registered model lacks that this UPS's scoring reads, and why."""

    #: user embeddings without the call neighbourhoods made of them (the fusion is trained again in any case)
    reembed: bool
    reasons: tuple[str, ...]


def outdated_model(settings: Settings) -> Outdated | None:
    """Whether the registered model was made by an older UPS: a fusion of another weight layout (this
    one does not load it: scores would be the untrained fusion's), or user embeddings written before the
    call neighbourhoods existed (the fusion's graph input: every user would score with a zero vector)."""
    from storage import open_store

    from .fusion import FORMAT
    from .neighbourhood import NODE_TYPE

    reasons = []
    with open_store(settings.db) as store:
        # (dim: one row read, where a count reads them all; this runs at every `ups up`)
        reembed = store.embeddings.dim(NODE_TYPE) is None and store.embeddings.dim("user") is not None
        if reembed:
            reasons.append(f"the user embeddings have no call neighbourhoods ({NODE_TYPE}): they predate them")
        fusion = store.models.latest("fusion")
        layout = fusion.config.get("format", 1) if fusion is not None else FORMAT
        if layout != FORMAT:
            reasons.append(f"the fusion model (version {fusion.version if fusion else '?'}) has weight layout {layout}, "
                           f"this UPS reads {FORMAT}")
    if not reasons:
        return None
    return Outdated(reembed, tuple(reasons))


def upgrade_model(settings: Settings, progress: Progress, outdated: Outdated, oracle: Oracle | None = None) -> ModelUpgraded:
    """Bring an :func:`outdated_model` up to date: every node embedded again with the registered HGT
    (writing the call neighbourhoods) where they are missing, then the fusion trained as the initial
    model's is."""
    from .embed import embed_all

    lo = 0.6 if outdated.reembed else 0.0
    emb = None
    if outdated.reembed:
        graph = _read_graph(settings, stage(progress, "graph", 0.0, 0.2))
        emb = embed_all(settings, progress=stage(progress, "embed", 0.2, lo), graph=graph)
    fusion = train_fusion(settings, stage(progress, "fusion", lo, 1.0), samples=settings.bootstrap_fusion_samples,
                          epochs=settings.bootstrap_fusion_epochs, lr=settings.fusion_lr, oracle=oracle)
    out = ModelUpgraded(reasons=list(outdated.reasons), fusion=fusion)
    if emb is not None:
        out["embeddings"] = emb
    return out


def graph_refresh(settings: Settings, params: dict[str, Any], progress: Progress,
                  oracle: Oracle | None = None, graphs: GraphCache | None = None) -> GraphRefreshed:
    """Re-embed the sampled or full graph with the current model, or (``full_retrain``) retrain the HGT,
    re-embed and retrain the fusion layer."""
    from .embed import embed_all
    from .training import train_hgt

    t0 = time.time()
    ratio = float(params["sample_ratio"]) if params["graph_scope"] == "sampled" else 1.0
    if params["mode"] != "full_retrain":
        emb = embed_all(settings, sample_ratio=ratio, progress=progress, graphs=graphs)
        return GraphRefreshed(mode=params["mode"], graph_scope=params["graph_scope"], sample_ratio=ratio,
                              embeddings=emb, node_counts=emb["nodes"], duration_s=round(time.time() - t0, 3))
    hgt = train_hgt(settings, epochs=int(params["epochs"]), sample_ratio=ratio, progress=part(progress, 0.0, 0.55))
    emb = embed_all(settings, sample_ratio=ratio, progress=part(progress, 0.55, 0.8), graphs=graphs)
    fusion = train_fusion(settings, part(progress, 0.8, 1.0), samples=0, epochs=int(params["fusion_epochs"]),
                          lr=settings.fusion_lr, oracle=oracle)
    return GraphRefreshed(mode=params["mode"], graph_scope=params["graph_scope"], sample_ratio=ratio,
                          embeddings=emb, node_counts=emb["nodes"], hgt=hgt, hgt_loss=hgt["final_loss"],
                          fusion=fusion, duration_s=round(time.time() - t0, 3))


def fusion_train(settings: Settings, params: dict[str, Any], progress: Progress,
                 oracle: Oracle | None = None) -> FusionJob:
    t0 = time.time()
    metrics = train_fusion(settings, progress, samples=int(params["samples"]), epochs=int(params["epochs"]),
                           lr=float(params["lr"]), oracle=oracle)
    return FusionJob(fusion=metrics, duration_s=round(time.time() - t0, 3))


def hgt_train(settings: Settings, params: dict[str, Any], progress: Progress,
              graphs: GraphCache | None = None) -> HgtJob:
    from .embed import embed_all
    from .training import train_hgt

    t0 = time.time()
    hi = 0.8 if params["embed"] else 1.0
    metrics = train_hgt(
        settings,
        epochs=int(params["epochs"]),
        sample_ratio=float(params["sample_ratio"]),
        mode=None if params["mode"] == "auto" else params["mode"],
        lr=float(params["lr"]),
        temperature=float(params["temperature"]),
        neg_ratio=int(params["neg_ratio"]),
        split=(float(params["train_ratio"]), float(params["val_ratio"]), float(params["test_ratio"])),
        seed=int(params["seed"]),
        progress=part(progress, 0.0, hi),
    )
    if not params["embed"]:
        return HgtJob(hgt=metrics, duration_s=round(time.time() - t0, 3))
    emb = embed_all(settings, progress=part(progress, hi, 1.0), graphs=graphs)
    return HgtJob(hgt=metrics, embeddings=emb, duration_s=round(time.time() - t0, 3))
