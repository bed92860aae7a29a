"""What fusion training reads from the store and writes back: the labelled users' profiles, rule outputs
and call-neighbourhood embeddings as :class:`~scoring.fusion_training.TrainingData`, and the trained model registered as a
new ``fusion`` version (with its ``model.registered`` event in the log)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import numpy as np

from config.settings import Settings
from storage.interface import Store
from storage.events import validate_event

from .errors import NotEnoughData
from . import neighbourhood
from .fusion import FusionCore
from .fusion_training import TrainingData, hash01, split_of
from .profile_features import profile_matrix
from .rules import RuleEngine


def _labels(store: Store, label: str) -> dict[str, int]:
    """The last observed value of ``label`` per user."""
    labels: dict[str, int] = {}
    for ev in store.read(types=["label.observed"]):
        if ev.user_id and ev.payload.get("label") == label:
            labels[ev.user_id] = int(ev.payload["value"])
    return labels


def training_data(store: Store, lock: threading.RLock, s: Settings, engine: RuleEngine, samples: int,
                  default_dim: int) -> tuple[TrainingData, int | None]:
    """The labelled users with a profile (a reproducible subset of ``samples`` of them; 0: all), and the
    HGT version their embeddings come from. Raises NotEnoughData."""
    with lock:
        labels = _labels(store, s.fusion_label)
        n_profiles = store.profiles.count()
    if not labels:
        raise NotEnoughData(f"no label.observed events with label {s.fusion_label!r} in {s.db}")
    if n_profiles == 0:
        raise NotEnoughData(f"no profiles in {s.db}: fold the log first (run the dataflow or its replay)")
    ids = sorted(labels)
    if 0 < samples < len(ids):  # a reproducible subset
        ids = sorted(sorted(ids, key=lambda u: hash01(u, s.seed + 1))[:samples])
    with lock:
        profiles = store.profiles.get_many(ids)
        ids = [u for u in ids if u in profiles]
        vectors = store.embeddings.get_many(neighbourhood.NODE_TYPE, ids)
        emb_version = store.models.latest_version("hgt")
        stale = not vectors and store.embeddings.count(neighbourhood.NODE_TYPE) == 0 and store.embeddings.count("user") > 0
    if stale:  # embeddings written by a UPS before the neighbourhoods: training now would see no graph at all
        raise NotEnoughData(f"{s.db} has user embeddings but no call neighbourhoods ({neighbourhood.NODE_TYPE}): "
                            "run `ups embed` to write both, then train the fusion")
    if not ids:
        raise NotEnoughData("none of the labelled users has a profile yet")
    _, f = engine.evaluate_many([profiles[u] for u in ids])
    dims = [v.shape[0] for v in vectors.values()]
    dim = max(set(dims), key=dims.count) if dims else default_dim
    e = np.zeros((len(ids), dim), dtype=np.float32)
    missing = np.ones(len(ids), dtype=bool)
    for i, u in enumerate(ids):
        v = vectors.get(u)
        if v is not None and v.shape[0] == dim:
            e[i] = v
            missing[i] = False
    y = np.array([1 - labels[u] for u in ids], dtype=np.float32)
    split = np.array([split_of(u, s.seed, s.fusion_test_share, s.fusion_val_share) for u in ids])
    x = profile_matrix([profiles[u] for u in ids])
    return TrainingData(ids, x, e, f, y, split, missing), emb_version


def register_fusion(store: Store, lock: threading.RLock, model: FusionCore, config: dict[str, Any],
                    metrics: Any) -> int:
    """Store ``model`` as the next ``fusion`` version and log its registration; the version."""
    summary = {k: metrics[k] for k in ("auc", "loss", "test_loss", "n_train", "n_test") if k in metrics}
    with lock, store.transaction():
        version = store.models.add("fusion", config, metrics, model.to_bytes())
        event = validate_event({
            "event_id": f"model-{uuid.uuid4().hex}", "type": "model.registered", "ts": time.time(),
            "user_id": None, "target_id": None,
            "payload": {"kind": "fusion", "version": version, "metrics": summary},
        })
        seq = store.append([event]).new[0][0]
        store.models.set_seq("fusion", version, seq)
    return version
