"""HGT model versions in the ``models`` table: weights (torch state dict), vocabularies and config,
metrics; each registration also appends a ``model.registered`` event to the log."""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from storage.events import Event, validate_event
from storage.interface import Store

from .model import GraphEmbedder

KIND = "hgt"
FORMAT = 1


@dataclass
class LoadedModel:
    version: int
    embedder: GraphEmbedder
    config: dict[str, Any]
    metrics: dict[str, Any]


def to_bytes(embedder: GraphEmbedder) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in embedder.state_dict().items()}, buf)
    return buf.getvalue()


def register_model(
    store: Store, embedder: GraphEmbedder, metrics: Mapping[str, Any], training: Mapping[str, Any], summary: Mapping[str, Any]
) -> int:
    """Store a version and announce it with a ``model.registered`` event, in one transaction."""
    config = {"format": FORMAT, **embedder.config(), "training": dict(training)}
    blob = to_bytes(embedder)
    with store.transaction():
        models = store.models
        version = models.add(KIND, config, dict(metrics), blob)
        event = validate_event(
            Event(
                f"model.registered-{KIND}-{version}-{uuid.uuid4().hex[:8]}",
                "model.registered",
                time.time(),
                None,
                None,
                {"kind": KIND, "version": version, "metrics": dict(summary)},
            )
        )
        res = store.append([event])
        if res.new:
            models.set_seq(KIND, version, res.new[0][0])
    return version


def load_model(store: Store, version: int | None = None, device: torch.device | str = "cpu") -> LoadedModel | None:
    """The given version (default: the newest) with its weights on ``device``; None when there is none."""
    models = store.models
    row = models.get(KIND, version) if version is not None else models.latest(KIND)
    if row is None:
        if version is not None:
            raise ValueError(f"no {KIND} model version {version}")
        return None
    if row.config.get("format") != FORMAT or row.weights is None:
        raise ValueError(f"{KIND} model version {row.version} has an unknown format; retrain with `ups train`")
    embedder = GraphEmbedder.from_config(row.config)
    state = torch.load(io.BytesIO(row.weights), map_location="cpu", weights_only=True)
    embedder.load_state_dict(state)
    embedder.to(device).eval()
    return LoadedModel(row.version, embedder, row.config, row.metrics)


def initialised(config: Mapping[str, Any], seed: int) -> GraphEmbedder:
    """A model built from ``config`` with the weights seed ``seed`` gives (without touching the global RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GraphEmbedder.from_config(config)


def untrained_copy(loaded: LoadedModel, seed: int) -> GraphEmbedder:
    """The trained model's architecture and vocabularies at its initial weights (the 'untrained' baseline)."""
    return initialised(loaded.config, seed).to(loaded.embedder.device)


def latest_version(store: Store) -> int | None:
    return store.models.latest_version(KIND)


__all__ = ["KIND", "LoadedModel", "to_bytes", "register_model", "load_model", "untrained_copy", "initialised", "latest_version"]
