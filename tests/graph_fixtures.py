"""Shared helpers of the graph / sampler / HGT / refresh tests (small graphs, small stores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataflow.bootstrap import append_dataset
from dataflow.generator import GeneratorConfig, MockGenerator
from scoring.features import EncoderConfig
from scoring.graph_schema import NODE_TYPES, RELATIONS
from scoring.graph import HeteroGraph
from scoring.model import GraphEmbedder
from storage.event_store import EventStore
from storage.events import Event
from config.settings import Settings

SMALL = GeneratorConfig(users=300, products=20, apps=12, events_per_user=15, seed=7)


def random_events(n_users: int = 120, n_products: int = 8, n_apps: int = 6, n_inter: int = 900, seed: int = 0,
                  start_seq: int = 1, unregistered: int = 5) -> list[tuple[int, Event]]:
    """A random heterogeneous event history: catalogue, registrations, interactions (some touching
    users that never registered)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[int, Event]] = []
    seq = start_seq - 1

    def add(t: str, u: str | None, tg: str | None, p: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        out.append((seq, Event(f"r{seed}-{seq}", t, 1_700_000_000.0 + seq, u, tg, p)))

    for i in range(n_products):
        add("product.listed", None, f"P{i}", {"name": f"流量包{i}号", "category": "流量", "price": float(5 + 7 * i)})
    for i in range(n_apps):
        add("app.listed", None, f"A{i}", {"name": f"应用{i}", "category": ["社交", "视频", "工具"][i % 3]})
    for i in range(n_users):
        add("user.registered", f"U{i}", None, {
            "name": "x", "gender": "U", "age": 30, "city": "c", "plan_type": ["4G", "5G", "家庭"][i % 3],
            "level": ["普通", "金卡"][i % 2], "device_brand": ["华为", "苹果", "小米"][i % 3],
            "monthly_fee": float(20 + i % 50), "tenure_months": int(i % 40)})
    types = list(RELATIONS)
    for _ in range(n_inter):
        t = types[int(rng.integers(len(types)))]
        u = f"U{int(rng.integers(n_users + unregistered))}"
        if t == "call":
            tg = f"U{int(rng.integers(n_users))}"
        elif t.startswith("product"):
            tg = f"P{int(rng.integers(n_products))}"
        else:
            tg = f"A{int(rng.integers(n_apps))}"
        add(t, u, tg, {"duration": 10.0} if t in ("call", "app.usage") else ({"amount": 5.0} if t == "product.order" else {}))
    return out


def random_graph(seed: int = 0, device: torch.device | str = "cpu", **kw: Any) -> HeteroGraph:
    g = HeteroGraph(device)
    g.apply_events(random_events(seed=seed, **kw))
    return g


def random_model(graph: HeteroGraph, seed: int = 0, layers: int = 2) -> GraphEmbedder:
    torch.manual_seed(seed)
    enc = EncoderConfig.fit(graph.space, {t: graph.raw_features(t) for t in NODE_TYPES}, {t: graph.nodes[t].ids for t in NODE_TYPES})
    return GraphEmbedder.create(enc, hidden=16, out_dim=8, layers=layers, heads=2, dropout=0.0).to(graph.device).eval()


def small_store(path: Path, cfg: GeneratorConfig = SMALL) -> MockGenerator:
    gen = MockGenerator(cfg)
    with EventStore(path) as store:
        append_dataset(store, gen, 5000)
    return gen


def device_setting(device: torch.device) -> str:
    """The ``UPS_DEVICE`` value that selects ``device``."""
    return "gpu" if device.type == "cuda" else "cpu"


def settings_for(db: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(db=db, device="cpu", hgt_hidden=16, embedding_dim=8, train_epochs=5,
                                train_batch_edges=512, refresh_budget=64, refresh_fanouts="all,all")
    base.update(kw)
    return Settings(**base)
