"""What each job kind does, run inside a worker process (see jobs.py).

Each task takes the settings, its validated params and a ``progress(fraction, message)`` callback and
returns a JSON-able result: duration, sample ratio, node counts, HGT loss history, fusion metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from storage import data_config
from config.settings import Settings

if TYPE_CHECKING:
    from scoring.graph_cache import GraphCache

Progress = Callable[[float, str], None]


def _part(progress: Progress, lo: float, hi: float) -> Progress:
    """A sub-range of the job's progress for one step of it."""

    def report(fraction: float, message: str = "") -> None:
        f = min(1.0, max(0.0, float(fraction))) if fraction == fraction else 0.0
        progress(lo + (hi - lo) * f, message)

    return report


def train_fusion(settings: Settings, progress: Progress, *, samples: int, epochs: int, lr: float) -> dict[str, Any]:
    """Fusion training with the oracle AUC when the store's dataset is the mock generator's."""
    from dataflow.oracle import retention_oracle
    from scoring.service import ScoringService

    with ScoringService(settings) as svc:
        return svc.train_fusion(samples=samples, epochs=epochs, lr=lr, progress=progress,
                                oracle=retention_oracle(settings.db, settings))


def initial_model(settings: Settings, progress: Progress, *, epochs: int, fusion_epochs: int,
                  train_ratio: float = 1.0) -> dict[str, Any]:
    """HGT training (on a share of the users), embeddings of every node, then the fusion layer: a usable
    model from scratch."""
    from scoring.embed import embed_all
    from scoring.training import train_hgt

    hgt = train_hgt(settings, epochs=epochs, sample_ratio=train_ratio, progress=_part(progress, 0.0, 0.6))
    emb = embed_all(settings, sample_ratio=1.0, progress=_part(progress, 0.6, 0.8))
    fusion = train_fusion(settings, _part(progress, 0.8, 1.0), samples=0, epochs=fusion_epochs,
                          lr=settings.fusion_lr)
    return {"hgt": hgt, "embeddings": emb, "fusion": fusion}


def graph_refresh(settings: Settings, params: dict[str, Any], progress: Progress,
                  graphs: GraphCache | None = None) -> dict[str, Any]:
    """The seed's RefreshOrchestrator: sampled or full graph; embeddings only, or retrain everything."""
    from scoring.embed import embed_all
    from scoring.training import train_hgt

    t0 = time.time()
    ratio = float(params["sample_ratio"]) if params["graph_scope"] == "sampled" else 1.0
    out: dict[str, Any] = {"mode": params["mode"], "graph_scope": params["graph_scope"], "sample_ratio": ratio}
    if params["mode"] == "full_retrain":
        out["hgt"] = train_hgt(settings, epochs=int(params["epochs"]), sample_ratio=ratio,
                               progress=_part(progress, 0.0, 0.55))
        out["embeddings"] = embed_all(settings, sample_ratio=ratio, progress=_part(progress, 0.55, 0.8),
                                      graphs=graphs)
        out["fusion"] = train_fusion(settings, _part(progress, 0.8, 1.0), samples=0,
                                     epochs=int(params["fusion_epochs"]), lr=settings.fusion_lr)
    else:
        out["embeddings"] = embed_all(settings, sample_ratio=ratio, progress=progress, graphs=graphs)
    out["node_counts"] = out["embeddings"].get("nodes")
    if "hgt" in out:
        out["hgt_loss"] = out["hgt"].get("final_loss")
    out["duration_s"] = round(time.time() - t0, 3)
    return out


def fusion_train(settings: Settings, params: dict[str, Any], progress: Progress,
                 graphs: GraphCache | None = None) -> dict[str, Any]:
    t0 = time.time()
    metrics = train_fusion(settings, progress, samples=int(params["samples"]), epochs=int(params["epochs"]),
                           lr=float(params["lr"]))
    return {"fusion": metrics, "duration_s": round(time.time() - t0, 3)}


def hgt_train(settings: Settings, params: dict[str, Any], progress: Progress,
              graphs: GraphCache | None = None) -> dict[str, Any]:
    from scoring.embed import embed_all
    from scoring.training import train_hgt

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
        progress=_part(progress, 0.0, hi),
    )
    out: dict[str, Any] = {"hgt": metrics}
    if params["embed"]:
        out["embeddings"] = embed_all(settings, progress=_part(progress, hi, 1.0), graphs=graphs)
    out["duration_s"] = round(time.time() - t0, 3)
    return out


def next_db_path(current: Path) -> Path:
    """``ups.db`` → ``ups.gen2.db`` → ``ups.gen3.db`` …: a new file beside the current one."""
    stem, n = current.stem, 2
    base, _, num = stem.rpartition(".gen")
    if base and num.isdigit():
        stem, n = base, int(num) + 1
    while (p := current.with_name(f"{stem}.gen{n}{current.suffix}")).exists():
        n += 1
    return p


def data_regenerate(settings: Settings, params: dict[str, Any], progress: Progress,
                    graphs: GraphCache | None = None) -> dict[str, Any]:
    """A fresh dataset and initial model in a new database file (the API switches to it afterwards).

    The dataset is written by ``ups init`` in a child process: the API side never imports the
    dataflow package (the generator lives there); they meet through the CLI and the store.
    """
    t0 = time.time()
    target = next_db_path(settings.db)
    env = {**os.environ, **data_config.as_env(params["config"])}
    env["UPS_DB"] = str(target)
    cmd = [sys.executable, "-m", "ups", "init", "--db", str(target), "--progress-json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    summary: dict[str, Any] = {}
    for line in proc.stdout:
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "fraction" in doc:
            progress(float(doc["fraction"]), str(doc.get("message", "")))
        elif "summary" in doc:
            summary = doc["summary"]
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0:
        raise RuntimeError(f"ups init failed ({proc.returncode}): {err.strip().splitlines()[-1:] or ''}")
    return {"db": str(target), "previous_db": str(settings.db), "config": params["config"], **summary,
            "duration_s": round(time.time() - t0, 3)}


#: kind -> task; each takes the worker's graph cache (``graphs``), which those that embed use
TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    "graph.refresh": graph_refresh,
    "fusion.train": fusion_train,
    "training.hgt": hgt_train,
    "data.regenerate": data_regenerate,
}
