"""Training the feature encoders and the HGT jointly.

InfoNCE per forward edge type (user→user calls, user→product orders/clicks, user→app uses/clicks),
averaged over edge types, on the training edges; validation and test edges are held out of the
message passing. Three modes:

* ``full``: one whole-graph forward per epoch (small graphs);
* ``minibatch``: per step, a batch of positive edges per type, their endpoints and a shared pool of
  negatives as seeds of a sampled subgraph (bounded memory: 1M users train on this machine);
* ``metis``: users partitioned with METIS (pymetis) over the call graph; one step per partition, on
  the partition's users, their products and apps, and the edges among them (Cluster-GCN style).
  What ``auto`` picks past ``train_full_max_edges``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, cast

import numpy as np
import torch
from torch import Tensor

from config.progress import Progress
from storage import open_store, store_exists

from .evaluate import EdgeSplit, link_aucs, split_edges, with_edges
from .features import EncoderConfig
from .graph import HeteroGraph
from .graph_loader import build_graph
from .graph_sample import sample_users
from .graph_schema import FORWARD_EDGE_TYPES, FORWARD_OF, NODE_TYPES, EdgeType, edge_key
from .model import GraphEmbedder, info_nce_shared
from .model_io import initialised, register_model
from .operation_results import HgtMetrics, HgtTrained, LinkAUC, SplitSizes
from .partitions import induced_subgraph, metis_partitions
from .sampler import make_sampler, parse_fanouts

TRAINING_MODES = ("full", "minibatch", "metis")
#: share of a step's training edges used as its supervision targets (and hidden from its message passing)
SUPERVISION_SHARE = 0.3


@dataclass
class TrainParams:
    epochs: int
    lr: float
    temperature: float
    neg_ratio: int
    split: tuple[float, float, float]
    seed: int
    mode: str
    batch_edges: int
    fanouts: list[int | None]
    max_steps: int
    metis_part_users: int
    id_lr_scale: float = 10.0
    id_weight_decay: float = 0.0
    loss_weights: Mapping[str, float] = field(default_factory=dict)
    minibatch_edges: int = 256

    @classmethod
    def from_settings(
        cls, settings: Any, mode: str, *, epochs: int | None = None, lr: float | None = None, temperature: float | None = None,
        neg_ratio: int | None = None, split: Sequence[float] | None = None, seed: int | None = None,
    ) -> "TrainParams":
        """The settings' training parameters, the given ones overriding; raises ValueError on bad values."""
        p = cls(
            epochs=settings.train_epochs if epochs is None else int(epochs),
            lr=settings.train_lr if lr is None else float(lr),
            temperature=settings.train_temperature if temperature is None else float(temperature),
            neg_ratio=settings.train_neg_ratio if neg_ratio is None else int(neg_ratio),
            split=tuple(settings.train_split if split is None else split),  # type: ignore[arg-type]
            seed=settings.train_seed if seed is None else int(seed),
            mode=mode,
            batch_edges=settings.train_batch_edges,
            fanouts=parse_fanouts(settings.train_fanouts),
            max_steps=settings.train_max_steps,
            metis_part_users=settings.train_metis_part_users,
            id_lr_scale=settings.train_id_lr_scale,
            id_weight_decay=settings.train_id_weight_decay,
            loss_weights=dict(settings.train_loss_weights),
            minibatch_edges=settings.train_minibatch_edges,
        )
        if p.temperature <= 0 or p.lr <= 0 or p.neg_ratio < 1:
            raise ValueError("lr and temperature must be > 0 and neg_ratio >= 1")
        known = {edge_key(et) for et in FORWARD_EDGE_TYPES}
        for k, w in p.loss_weights.items():
            if k not in known or not w >= 0:
                raise ValueError(f"train_loss_weights: {k!r}: {w} is not an edge type ({', '.join(sorted(known))}) with a weight >= 0")
        return p


def _choose_mode(mode: str | None, settings: Any, graph: HeteroGraph) -> str:
    m = mode or settings.train_mode
    if m == "auto":
        # past the full-batch size, METIS partitions: at 1M users a partition step costs a quarter of a
        # sampled mini-batch step and an epoch covers every training edge (bench/embeddings.py)
        return "full" if graph.num_edges() <= settings.train_full_max_edges else "metis"
    if m not in TRAINING_MODES:
        raise ValueError(f"training mode must be one of {', '.join(TRAINING_MODES)} (or auto), not {m!r}")
    return m


class Trainer:
    """Runs epochs of one mode over a training graph; the model is trained in place."""

    def __init__(self, embedder: GraphEmbedder, graph: HeteroGraph, train: Mapping[EdgeType, Tensor], p: TrainParams) -> None:
        self.embedder = embedder
        self.graph = graph  # training edges only
        self.train_eids = {et: e for et, e in train.items() if e.numel()}
        if not self.train_eids:
            raise ValueError("no training edges: the graph has no interactions (run `ups generate` first)")
        self.p = p
        ident = [w for n, w in embedder.named_parameters() if ".ident." in n]
        rest = [w for n, w in embedder.named_parameters() if ".ident." not in n]
        # weight decay only on the per-node id embeddings: free per-node parameters are what can memorise
        # the training edges (a product user's clicks are independent draws; remembering them hurts)
        groups = [{"params": rest}] + (
            [{"params": ident, "lr": p.lr * p.id_lr_scale, "weight_decay": p.id_weight_decay}] if ident else []
        )
        self.opt = torch.optim.Adam(groups, lr=p.lr)
        # drawn on the CPU, then moved: a seed gives the same negatives and batches on every device
        self.gen = torch.Generator(device="cpu").manual_seed(p.seed)
        self.device = graph.device
        # in the training graph, edge ids of the training edges are simply 0..n-1
        self._sampler = make_sampler(graph, p.fanouts, static=True, seed=p.seed) if p.mode == "minibatch" else None
        self._parts: list[dict[str, Tensor]] | None = None

    def _rand(self, high: int, size: Sequence[int]) -> Tensor:
        return torch.randint(0, max(high, 1), tuple(size), generator=self.gen).to(self.device)

    def _positives(self, et: EdgeType, cap: int) -> Tensor:
        """Supervision edges of a step: at most ``cap`` and at most ``SUPERVISION_SHARE`` of the edges,
        distinct. They are taken out of the step's message passing (as held-out edges are at
        evaluation), or the model learns to spot the edge itself and not what predicts it."""
        n = len(self.graph.edges[et])
        k = max(1, min(cap, int(SUPERVISION_SHARE * n)))
        return torch.randperm(n, generator=self.gen)[:k].to(self.device)

    def _without(self, edge_index: Mapping[EdgeType, Tensor], edge_id: Mapping[EdgeType, Tensor] | None,
                 held: Mapping[EdgeType, Tensor]) -> dict[EdgeType, Tensor]:
        """``edge_index`` minus the edges (by id into the forward lists) in ``held``, both directions."""
        out: dict[EdgeType, Tensor] = {}
        for et, ei in edge_index.items():
            fwd = FORWARD_OF[et][0]
            h = held.get(fwd)
            if h is None or h.numel() == 0 or ei.numel() == 0:
                out[et] = ei
                continue
            ids = edge_id[et] if edge_id is not None else torch.arange(ei.shape[1], device=ei.device)
            out[et] = ei[:, ~torch.isin(ids, h)]
        return out

    def _pool(self, n: int) -> Tensor:
        """Negatives of one side of one edge type for a step: every node when there are at most
        ``neg_ratio`` (products, apps: an exact softmax), else ``neg_ratio`` uniform draws. Uniform, not
        degree-weighted: the score must rank by popularity and activity too, which held-out pairs
        (and the degree baseline) reward; popularity-weighted negatives would train it away."""
        if n <= self.p.neg_ratio:
            return torch.arange(n, device=self.device)
        return self._rand(n, (self.p.neg_ratio,))

    def _loss(self, emb: Mapping[str, Tensor], batches: Mapping[EdgeType, tuple[Tensor, Tensor, Tensor, Tensor]]) -> Tensor:
        """Symmetric InfoNCE per edge type: each positive against the step's pool of corrupted targets
        and against its pool of corrupted sources, so the score ranks pairs by how likely they are at
        all (activity and popularity included), not only targets per source; averaged over edge types.
        Batches hold indices into ``emb``: (src, dst, target pool, source pool)."""
        losses = []
        weights = 0.0
        hgt = self.embedder.hgt
        t = self.p.temperature
        for et, (src, pos, pool_d, pool_s) in batches.items():
            if src.numel() == 0:
                continue
            s, d = emb[et[0]][src], emb[et[2]][pos]
            ps, pd = emb[et[0]][pool_s], emb[et[2]][pool_d]
            pos_logit = hgt.score(et, s, d)
            w = self.p.loss_weights.get(edge_key(et), 1.0)
            losses.append(w * info_nce_shared(pos_logit, hgt.score_matrix(et, s, pd), pos[:, None] == pool_d[None, :], t))
            losses.append(w * info_nce_shared(pos_logit, hgt.score_matrix(et, ps, d).T, src[:, None] == pool_s[None, :], t))
            weights += 2 * w
        return torch.stack(losses).sum() / weights

    def _step(self, loss: Tensor) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def epoch(self) -> float:
        self.embedder.train()
        if self.p.mode == "full":
            return self._epoch_full()
        if self.p.mode == "minibatch":
            return self._epoch_minibatch()
        return self._epoch_metis()

    # ---------------------------------------------------------------- full batch

    def _epoch_full(self) -> float:
        batches = {}
        held: dict[EdgeType, Tensor] = {}
        hidden: dict[EdgeType, tuple[Tensor, Tensor]] = {}
        for et in self.train_eids:
            e = self.graph.edges[et]
            ids = self._positives(et, self.p.batch_edges)
            held[et] = ids
            src, pos = e.src.view[ids], e.dst.view[ids]
            hidden[et] = (src, pos)
            batches[et] = (src, pos, self._pool(self.graph.num_nodes(et[2])), self._pool(self.graph.num_nodes(et[0])))
        emb = self.embedder(self.graph, self._without(self.graph.edge_index_dict(), None, held), hidden)
        return self._step(self._loss(emb, batches))

    # ---------------------------------------------------------------- sampled mini-batches

    def _epoch_minibatch(self) -> float:
        assert self._sampler is not None
        biggest = max(len(self.graph.edges[et]) for et in self.train_eids)
        steps = min(self.p.max_steps, max(1, math.ceil(biggest / self.p.minibatch_edges)))
        losses = []
        for _ in range(steps):
            seeds: dict[str, list[Tensor]] = {t: [] for t in NODE_TYPES}
            raw: dict[EdgeType, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
            held: dict[EdgeType, Tensor] = {}
            hidden: dict[EdgeType, tuple[Tensor, Tensor]] = {}
            for et in self.train_eids:
                e = self.graph.edges[et]
                ids = self._positives(et, self.p.minibatch_edges)
                held[et] = ids
                src, pos = e.src.view[ids], e.dst.view[ids]
                hidden[et] = (src, pos)
                # the negative pools join the seeds, so the subgraph embeds them too
                pool_d, pool_s = self._pool(self.graph.num_nodes(et[2])), self._pool(self.graph.num_nodes(et[0]))
                raw[et] = (src, pos, pool_d, pool_s)
                seeds[et[0]] += [src, pool_s]
                seeds[et[2]] += [pos, pool_d]
            seed_t = {t: torch.unique(torch.cat(v)) for t, v in seeds.items() if v}
            sub = self._sampler.sample(seed_t)
            sub.edge_index = self._without(sub.edge_index, sub.edge_id, held)
            emb = self.embedder.forward_subgraph(self.graph, sub, hidden)
            local = {t: _Local(sub.node_idx[t][: sub.num_seeds.get(t, 0)]) for t in seed_t}
            batches = {
                et: (local[et[0]](src), local[et[2]](pos), local[et[2]](pool_d), local[et[0]](pool_s))
                for et, (src, pos, pool_d, pool_s) in raw.items()
            }
            losses.append(self._step(self._loss(emb, batches)))
        return float(np.mean(losses))

    # ---------------------------------------------------------------- METIS partitions

    def _partitions(self) -> list[dict[str, Tensor]]:
        if self._parts is None:
            self._parts = metis_partitions(self.graph, self.p.metis_part_users, self.p.seed)
        return self._parts

    def _epoch_metis(self) -> float:
        parts = self._partitions()
        order = torch.randperm(len(parts), generator=self.gen).tolist()[: self.p.max_steps]
        losses = []
        for k in order:
            sub, local_edges = induced_subgraph(self.graph, parts[k])
            batches = {}
            held: dict[EdgeType, Tensor] = {}
            hidden: dict[EdgeType, tuple[Tensor, Tensor]] = {}
            for et, (src, dst) in local_edges.items():
                if src.numel() == 0 or et not in self.train_eids:
                    continue
                n = src.numel()
                pick = torch.randperm(n, generator=self.gen)[: max(1, min(self.p.batch_edges, int(SUPERVISION_SHARE * n)))].to(self.device)
                held[et] = sub.edge_id[et][pick]
                src, dst = src[pick], dst[pick]
                hidden[et] = (sub.node_idx[et[0]][src], sub.node_idx[et[2]][dst])
                batches[et] = (src, dst, self._pool(sub.num_nodes(et[2])), self._pool(sub.num_nodes(et[0])))
            if not batches:
                continue
            sub.edge_index = self._without(sub.edge_index, sub.edge_id, held)
            emb = self.embedder.forward_subgraph(self.graph, sub, hidden)
            losses.append(self._step(self._loss(emb, batches)))
        return float(np.mean(losses)) if losses else float("nan")


class _Local:
    """Global node index -> position among a subgraph's seeds."""

    def __init__(self, seeds: Tensor) -> None:
        self.order = torch.argsort(seeds)
        self.sorted = seeds[self.order]

    def __call__(self, glob: Tensor) -> Tensor:
        return self.order[torch.searchsorted(self.sorted, glob)]


def _checked(
    settings: Any, sample_ratio: float | None, seed: int | None, split: Sequence[float] | None, epochs: int | None
) -> tuple[float, int, tuple[float, ...], int]:
    """(sample ratio, seed, split shares, epochs): the arguments or the settings, refused when out of range."""
    ratio = settings.train_sample_ratio if sample_ratio is None else float(sample_ratio)
    if not 0 < ratio <= 1:
        raise ValueError(f"sample_ratio must be within (0, 1], not {ratio}")
    shares = tuple(settings.train_split if split is None else split)
    if len(shares) != 3 or min(shares) < 0 or shares[0] <= 0 or shares[2] <= 0 or abs(sum(shares) - 1) > 1e-6:
        raise ValueError(f"split must be three shares (train, val, test), train and test > 0, adding up to 1; got {list(shares)}")
    n_epochs = settings.train_epochs if epochs is None else int(epochs)
    if n_epochs < 1:
        raise ValueError(f"epochs must be at least 1, not {n_epochs}")
    return ratio, settings.train_seed if seed is None else int(seed), shares, n_epochs


def _run_epochs(
    trainer: Trainer, embedder: GraphEmbedder, train_graph: HeteroGraph, graph: HeteroGraph, es: EdgeSplit,
    settings: Any, n_epochs: int, seed: int, on_epoch: Callable[[int, float], None],
) -> tuple[list[float], int, dict[str, Tensor] | None]:
    """Train ``n_epochs``; every ``train_eval_every`` epochs the validation edges (never the test edges)
    pick the best weights, which the embedder keeps. Returns the loss history, the epoch kept and the
    training graph's embeddings with the weights kept (None when no validation ran)."""
    history: list[float] = []
    every = settings.train_eval_every
    best: tuple[float, int, dict[str, Tensor], dict[str, Tensor]] | None = None
    for ep in range(n_epochs):
        history.append(trainer.epoch())
        if every and ((ep + 1) % every == 0 or ep + 1 == n_epochs):
            embedder.eval()
            emb = embedder.embed_all(train_graph, settings.embed_chunk_edges)
            v = link_aucs(train_graph, graph, es.val, {"trained": (emb, embedder.hgt)}, seed, settings.eval_negatives)
            picked = [t for r in v.values() if (t := r.get("trained")) is not None]
            score = float(np.mean(picked or [0.0]))
            if best is None or score > best[0]:
                best = (score, ep + 1, {k: t.detach().clone() for k, t in embedder.state_dict().items()}, emb)
        on_epoch(ep + 1, history[-1])
    if best is None:
        return history, n_epochs, None
    embedder.load_state_dict(best[2])
    return history, best[1], best[3]


def _records(
    graph: HeteroGraph, es: EdgeSplit, params: TrainParams, settings: Any, history: list[float], best_epoch: int,
    val: dict[str, dict[str, Any]], test: dict[str, dict[str, Any]], ratio: float,
    duration: float, device: torch.device,
) -> tuple[HgtMetrics, dict[str, Any], dict[str, Any]]:
    """What a trained version records: its metrics, how it was trained, and the summary its event carries."""
    metrics = HgtMetrics(
        mode=params.mode,
        epochs=params.epochs,
        loss_history=[round(x, 6) for x in history],
        final_loss=history[-1],
        best_epoch=best_epoch,
        val_auc=cast(dict[str, LinkAUC], val),
        test_auc=cast(dict[str, LinkAUC], test),
        nodes={t: graph.num_nodes(t) for t in NODE_TYPES},
        edges={edge_key(et): len(graph.edges[et]) for et in FORWARD_EDGE_TYPES},
        split=cast(dict[str, SplitSizes], es.sizes()),
        duration_s=round(duration, 3),
        device=str(device),
        last_seq=graph.last_seq,
    )
    training = {
        "sample_ratio": ratio,
        "seed": params.seed,
        "split": list(params.split),
        "mode": params.mode,
        "epochs": params.epochs,
        "lr": params.lr,
        "temperature": params.temperature,
        "neg_ratio": params.neg_ratio,
        "loss_weights": dict(params.loss_weights),
        "id_weight_decay": params.id_weight_decay,
        "eval_negatives": settings.eval_negatives,
        "fanouts": settings.train_fanouts,
        "last_seq": graph.last_seq,
    }
    summary = {
        "final_loss": round(history[-1], 6),
        "test_auc": {k: round(t, 4) for k, v in test.items() if (t := v.get("trained")) is not None},
        "mode": params.mode,
    }
    return metrics, training, summary


def train_hgt(
    settings: Any,
    epochs: int | None = None,
    sample_ratio: float | None = None,
    mode: str | None = None,
    lr: float | None = None,
    temperature: float | None = None,
    neg_ratio: int | None = None,
    split: Sequence[float] | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    graph: HeteroGraph | None = None,
) -> HgtTrained:
    """Train on the store's graph, register the model version, return its metrics. With ``graph`` (the
    whole store's, already read), the users' sample is cut from it instead of read again.

    Metrics: loss history, validation and test AUC per edge type (trained, untrained, degree), node
    and edge counts, duration, mode and the version registered.
    """
    from config.device import resolve_device

    t0 = time.perf_counter()
    report = progress or (lambda f, m: None)
    if not store_exists(settings.db):
        raise FileNotFoundError(f"no database at {settings.db}; run `ups generate` first")
    device = resolve_device(settings.device)
    ratio, seed_v, shares, n_epochs = _checked(settings, sample_ratio, seed, split, epochs)

    if graph is not None:
        graph = sample_users(graph, ratio, seed_v)
    else:
        with open_store(settings.db) as store:
            graph = build_graph(
                store, device=device, sample_ratio=ratio, sample_seed=seed_v, compact_min=settings.graph_compact_min,
                progress=lambda f, m: report(0.1 * f, m),
            )
    if graph.num_nodes("user") < 2 or graph.num_edges() == 0:
        raise ValueError(
            f"not enough data to train: {graph.num_nodes('user')} users and {graph.num_edges() // 2} interactions "
            "in the (sampled) graph; run `ups generate` first"
        )
    chosen = _choose_mode(mode, settings, graph)
    params = TrainParams.from_settings(
        settings, chosen, epochs=n_epochs, lr=lr, temperature=temperature, neg_ratio=neg_ratio, split=shares, seed=seed_v
    )
    es = split_edges(graph, shares, seed_v)
    train_graph = with_edges(graph, es.train)
    enc = EncoderConfig.fit(
        graph.space, {t: graph.raw_features(t) for t in NODE_TYPES}, {t: graph.nodes[t].ids for t in NODE_TYPES},
        id_dim=settings.hgt_id_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_v)
        shape = GraphEmbedder.create(
            enc, settings.hgt_hidden, settings.embedding_dim, settings.hgt_layers, settings.hgt_heads, settings.hgt_dropout
        ).config()
    embedder = initialised(shape, seed_v).to(device)
    untrained = copy.deepcopy(embedder).eval()

    train_ids = {et: torch.arange(len(train_graph.edges[et]), device=device) for et in FORWARD_EDGE_TYPES}
    trainer = Trainer(embedder, train_graph, train_ids, params)
    history, best_epoch, kept = _run_epochs(
        trainer, embedder, train_graph, graph, es, settings, n_epochs, seed_v,
        lambda ep, loss: report(0.15 + 0.7 * ep / n_epochs, f"epoch {ep}/{n_epochs} ({chosen}): loss {loss:.4f}"),
    )

    report(0.87, "evaluating on held-out edges")
    embedder.eval()
    # the kept weights' embeddings were made when they were validated (a whole forward pass saved)
    emb = kept if kept is not None else embedder.embed_all(train_graph, settings.embed_chunk_edges)
    emb0 = untrained.embed_all(train_graph, settings.embed_chunk_edges)
    both = {"trained": (emb, embedder.hgt), "untrained": (emb0, untrained.hgt)}
    val = link_aucs(train_graph, graph, es.val, both, seed_v, settings.eval_negatives)
    test = link_aucs(train_graph, graph, es.test, both, seed_v + 1, settings.eval_negatives)
    metrics, training, summary = _records(
        graph, es, params, settings, history, best_epoch, val, test, ratio, time.perf_counter() - t0, device
    )
    report(0.95, "registering the model")
    with open_store(settings.db) as store:
        version = register_model(store, embedder, metrics, training, summary)
    report(1.0, f"registered hgt model version {version}")
    return HgtTrained(**metrics, version=version)


__all__ = ["train_hgt", "Trainer", "TrainParams", "metis_partitions", "induced_subgraph", "TRAINING_MODES"]
