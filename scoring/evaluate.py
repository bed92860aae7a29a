"""Held-out edges and embedding quality: link-prediction AUC (trained vs untrained vs degree) and the
AUC of a logistic regression on user embeddings for the planted label.

Held-out edges are interaction events (edges of the multigraph) chosen by a seeded hash of their seq;
negatives are uniformly drawn (source, target) pairs that are no edge at all (PyG's
``RandomLinkSplit`` / ``negative_sampling`` convention). The degree baseline scores a pair by the product of the
endpoints' degrees in the training graph (preferential attachment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from config.progress import Progress
from storage import Store, open_store, store_exists

from .graph import HeteroGraph
from .graph_buffers import EdgeTable
from .graph_schema import FORWARD_EDGE_TYPES, NODE_TYPES, EdgeType, edge_key
from .model import link_score

#: edge types whose held-out AUC `ups evaluate` reports (user–app and user–user, plus user–product)
REPORTED_EDGE_TYPES: tuple[EdgeType, ...] = FORWARD_EDGE_TYPES


def _splitmix(x: Tensor) -> Tensor:
    """A 64-bit integer mix (splitmix64 finaliser), vectorised; wraps like the C original."""
    x = x ^ (x >> 30)
    x = x * -4658895280553007687  # 0xbf58476d1ce4e5b9 as a signed int64
    x = x ^ (x >> 27)
    x = x * -7723592293110705685  # 0x94d049bb133111eb
    return x ^ (x >> 31)


@dataclass
class EdgeSplit:
    """Edge ids (into the forward edge lists) per forward edge type."""

    train: dict[EdgeType, Tensor]
    val: dict[EdgeType, Tensor]
    test: dict[EdgeType, Tensor]

    def sizes(self) -> dict[str, dict[str, int]]:
        return {
            edge_key(et): {"train": int(self.train[et].numel()), "val": int(self.val[et].numel()), "test": int(self.test[et].numel())}
            for et in self.train
        }


def split_edges(graph: HeteroGraph, shares: Sequence[float], seed: int) -> EdgeSplit:
    """Each interaction event (edge) goes to train / val / test by a seeded hash of its seq, the way
    PyG's ``RandomLinkSplit`` splits edges: stable as the log grows, so ``ups evaluate`` rebuilds the
    very held-out edges the model was trained without."""
    train_share, val_share = float(shares[0]), float(shares[1])
    tr: dict[EdgeType, Tensor] = {}
    va: dict[EdgeType, Tensor] = {}
    te: dict[EdgeType, Tensor] = {}
    for et in FORWARD_EDGE_TYPES:
        e = graph.edges[et]
        key = _splitmix(_splitmix(e.seq.view * 2654435761 + seed))
        u = (key & ((1 << 52) - 1)).double() / float(1 << 52)
        ids = torch.arange(len(e), device=graph.device)
        tr[et] = ids[u < train_share]
        va[et] = ids[(u >= train_share) & (u < train_share + val_share)]
        te[et] = ids[u >= train_share + val_share]
    return EdgeSplit(tr, va, te)


def with_edges(graph: HeteroGraph, keep: Mapping[EdgeType, Tensor]) -> HeteroGraph:
    """A graph sharing ``graph``'s nodes with only the edges ``keep`` names (for training without the
    held-out edges). Not to be updated: its node tables are the original's."""
    g = HeteroGraph.__new__(HeteroGraph)
    g.device, g.space, g.sample_ratio, g.sample_seed = graph.device, graph.space, graph.sample_ratio, graph.sample_seed
    g.compact_min, g.nodes, g.last_seq, g._adj = graph.compact_min, graph.nodes, graph.last_seq, {}
    g.edges = {}
    for et, table in graph.edges.items():
        ids = keep[et]
        t = EdgeTable(graph.device)
        t.append(table.src.view[ids], table.dst.view[ids], table.ts.view[ids], table.seq.view[ids])
        g.edges[et] = t
    return g


# ------------------------------------------------------------------------------------------ link AUC


def _pair_keys(src: Tensor, dst: Tensor, n_dst: int) -> Tensor:
    return src * max(n_dst, 1) + dst


def link_candidates(
    graph: HeteroGraph, et: EdgeType, eids: Tensor, seed: int, tries: int = 8, negatives: int = 1
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Positive pairs of the held-out edges ``eids`` and ``negatives`` times as many negative pairs:
    uniformly drawn (source, target) pairs that are no edge anywhere in ``graph`` (PyG's
    ``negative_sampling``). More negatives per positive make the AUC estimate less noisy (a few
    hundred held-out orders leave it +-0.02 with one each). Returns (pos_src, pos_dst, neg_src, neg_dst)."""
    e = graph.edges[et]
    src, pos = e.src.view[eids], e.dst.view[eids]
    n_src, n_dst = graph.num_nodes(et[0]), graph.num_nodes(et[2])
    known = torch.unique(_pair_keys(e.src.view, e.dst.view, n_dst))
    gen = torch.Generator(device="cpu").manual_seed(seed)  # the same negatives whatever the device
    rows_n = src.numel() * max(1, negatives)
    cs = torch.randint(0, max(n_src, 1), (rows_n, tries), generator=gen).to(graph.device)
    cd = torch.randint(0, max(n_dst, 1), (rows_n, tries), generator=gen).to(graph.device)
    keys = _pair_keys(cs, cd, n_dst)
    at = torch.searchsorted(known, keys).clamp_max(max(known.numel() - 1, 0))
    bad = (known[at] == keys) if known.numel() else torch.zeros_like(keys, dtype=torch.bool)
    if et[0] == et[2]:
        bad |= cs == cd
    ok = ~bad
    has = ok.any(dim=1)
    first = torch.argmax(ok.int(), dim=1)
    rows = torch.arange(rows_n, device=graph.device)
    return src, pos, cs[rows, first][has], cd[rows, first][has]


def auc(pos: Tensor | np.ndarray, neg: Tensor | np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    p = pos.detach().cpu().numpy() if isinstance(pos, Tensor) else np.asarray(pos)
    n = neg.detach().cpu().numpy() if isinstance(neg, Tensor) else np.asarray(neg)
    if len(p) == 0 or len(n) == 0:
        return None
    y = np.concatenate([np.ones(len(p)), np.zeros(len(n))])
    return float(roc_auc_score(y, np.concatenate([p, n])))


def auc_interval(pos: Tensor | np.ndarray, neg: Tensor | np.ndarray, z: float = 1.959964) -> tuple[float, float] | None:
    """The AUC's confidence interval (95 % by default) from its sampling noise alone: how far another
    draw of as many held-out edges and negative pairs would move it. DeLong's variance (the
    structural components of the Mann-Whitney statistic, from midranks as in Sun & Xu 2014): no
    well-kept Python library computes it, and it is a few array operations."""
    from scipy.stats import rankdata

    p = (pos.detach().cpu().numpy() if isinstance(pos, Tensor) else np.asarray(pos)).astype(np.float64)
    n = (neg.detach().cpu().numpy() if isinstance(neg, Tensor) else np.asarray(neg)).astype(np.float64)
    m, k = len(p), len(n)
    if m < 2 or k < 2:
        return None
    joint = rankdata(np.concatenate([p, n]))
    value = (joint[:m].sum() - m * (m + 1) / 2) / (m * k)
    v10 = (joint[:m] - rankdata(p)) / k  # per positive: the share of negatives it outranks
    v01 = 1.0 - (joint[m:] - rankdata(n)) / m  # per negative: the share of positives above it
    half = z * float(np.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / k))
    return max(0.0, float(value) - half), min(1.0, float(value) + half)


def degrees(graph: HeteroGraph) -> dict[str, Tensor]:
    """Total degree per node over the graph's edges (all types, both directions)."""
    deg = {t: torch.zeros(graph.num_nodes(t), device=graph.device) for t in NODE_TYPES}
    for et, e in graph.edges.items():
        deg[et[0]].index_add_(0, e.src.view, torch.ones(len(e), device=graph.device))
        deg[et[2]].index_add_(0, e.dst.view, torch.ones(len(e), device=graph.device))
    return deg


def link_aucs(
    train_graph: HeteroGraph,
    full_graph: HeteroGraph,
    held_out: Mapping[EdgeType, Tensor],
    embeddings: Mapping[str, tuple[Mapping[str, Tensor], Any]],
    seed: int,
    negatives: int = 1,
) -> dict[str, dict[str, Any]]:
    """AUC per edge type for each named (embeddings, model) pair, the model giving the relation vectors
    of the link score, plus the degree (preferential attachment) baseline on the training edges; the
    trained model's 95 % interval (``trained_ci95``, :func:`auc_interval`), the positive pairs and the
    negative pairs it was measured on."""
    deg = degrees(train_graph)
    out: dict[str, dict[str, Any]] = {}
    for et in REPORTED_EDGE_TYPES:
        eids = held_out.get(et)
        if eids is None or eids.numel() == 0:
            continue
        src, pos, nsrc, ndst = link_candidates(full_graph, et, eids, seed, negatives=negatives)
        if src.numel() == 0 or nsrc.numel() == 0:
            continue
        row: dict[str, Any] = {}
        for name, (emb, model) in embeddings.items():
            s, d = emb[et[0]], emb[et[2]]
            with torch.no_grad():
                if model is None:
                    scores = link_score(s[src], d[pos]), link_score(s[nsrc], d[ndst])
                else:
                    scores = model.score(et, s[src], d[pos]), model.score(et, s[nsrc], d[ndst])
            row[name] = auc(*scores)
            if name == "trained":
                row["trained_ci95"] = auc_interval(*scores)
        ds, dd = deg[et[0]], deg[et[2]]
        row["degree"] = auc(ds[src] * dd[pos], ds[nsrc] * dd[ndst])
        row["pairs"] = int(src.numel())
        row["negatives"] = int(nsrc.numel())
        out[edge_key(et)] = row
    return out


# ------------------------------------------------------------------------------------------ label AUC


def observed_labels(store: Store, label: str = "churn") -> dict[str, int]:
    """user id -> last observed value of ``label``."""
    out: dict[str, int] = {}
    for ev in store.read(types=["label.observed"]):
        p = ev.payload
        if p.get("label") == label and ev.user_id is not None:
            out[ev.user_id] = int(p["value"])
    return out


def label_auc(user_ids: Sequence[str], user_embeddings: np.ndarray, labels: Mapping[str, int], seed: int = 0) -> float | None:
    """Cross-validated (5-fold) AUC of a logistic regression on user embeddings for the label."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = [(i, labels[u]) for i, u in enumerate(user_ids) if u in labels]
    if len(rows) < 20:
        return None
    idx = np.array([i for i, _ in rows])
    y = np.array([v for _, v in rows])
    if y.min() == y.max() or min(np.bincount(y)) < 5:
        return None
    x = user_embeddings[idx]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    p = cross_val_predict(clf, x, y, cv=folds, method="predict_proba")[:, 1]
    return auc(p[y == 1], p[y == 0])


# ------------------------------------------------------------------------------------------ `ups evaluate`


def evaluate(settings: Any, progress: Progress | None = None) -> dict[str, Any]:
    """Quality of the newest HGT model on the held-out edges it was trained without."""
    from config.device import resolve_device

    from .graph_loader import build_graph
    from .model_io import load_model, untrained_copy

    if not store_exists(settings.db):
        raise FileNotFoundError(f"no database at {settings.db}; run `ups generate` first")
    device = resolve_device(settings.device)
    report = progress or (lambda f, m: None)
    with open_store(settings.db) as store:
        loaded = load_model(store, device=device)
        if loaded is None:
            raise ValueError("no HGT model registered yet; run `ups train` first")
        tcfg = loaded.config.get("training", {})
        ratio, seed = float(tcfg.get("sample_ratio", 1.0)), int(tcfg.get("seed", 0))
        shares = tcfg.get("split", list(settings.train_split))
        graph = build_graph(
            store, device=device, sample_ratio=ratio, sample_seed=seed, compact_min=settings.graph_compact_min,
            progress=lambda f, m: report(0.4 * f, m),
        )
        labels = observed_labels(store)
    split = split_edges(graph, shares, seed)
    train_graph = with_edges(graph, split.train)
    report(0.45, "embedding with the trained model")
    trained = loaded.embedder.eval().embed_all(train_graph, settings.embed_chunk_edges)
    report(0.65, "embedding with an untrained model")
    fresh = untrained_copy(loaded, seed).eval()
    untrained = fresh.embed_all(train_graph, settings.embed_chunk_edges)
    report(0.85, "scoring held-out edges")
    both = {"trained": (trained, loaded.embedder.hgt), "untrained": (untrained, fresh.hgt)}
    negatives = int(tcfg.get("eval_negatives", 1))  # the test pairs training scored
    links = link_aucs(train_graph, graph, split.test, both, seed + 1, negatives)
    users = graph.nodes["user"].ids
    result: dict[str, Any] = {
        "link_auc": {k: {m: v[m] for m in ("trained", "untrained", "degree")} for k, v in links.items()},
        "label_auc": label_auc(users, trained["user"].cpu().numpy(), labels, seed),
        "label_auc_untrained": label_auc(users, untrained["user"].cpu().numpy(), labels, seed),
        "model_version": loaded.version,
        "link_auc_ci95": {k: v["trained_ci95"] for k, v in links.items()},
        "held_out_pairs": {k: v["pairs"] for k, v in links.items()},
        "negative_pairs": {k: v["negatives"] for k, v in links.items()},
        "labelled_users": sum(1 for u in users if u in labels),
    }
    report(1.0, "done")
    return result


__all__ = [
    "EdgeSplit",
    "split_edges",
    "with_edges",
    "link_candidates",
    "link_aucs",
    "auc",
    "auc_interval",
    "degrees",
    "observed_labels",
    "label_auc",
    "evaluate",
    "REPORTED_EDGE_TYPES",
]
