"""The HGT model, the feature encoder + HGT pair, and the InfoNCE loss.

``GraphEmbedder`` runs the whole model three ways: on the whole graph (training on small graphs),
on a sampled subgraph (mini-batches, incremental refresh), and layer by layer over edge-bounded
chunks of destination nodes, which is the full-graph forward for graphs whose per-edge messages do
not fit in memory at once (1M users, ~40M edges).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import HGTConv

from .features import EncoderConfig, HeteroFeatureEncoder
from .graph_schema import EDGE_TYPES, NODE_TYPES, EdgeType
from .graph import HeteroGraph
from .hgt_layer import attend, finish, kqv, project
from .incoming import IncomingEdges
from .sampler import NeighborSampler, Subgraph

#: edges a training step hides from the message passing: forward edge type -> (src, dst) node indices
Hidden = Mapping[EdgeType, tuple[Tensor, Tensor]]


@dataclass
class HGTConfig:
    """Shape of the HGT: per-type input projection, ``layers`` HGTConv layers, per-type output."""

    in_dims: dict[str, int]
    hidden: int = 64
    out_dim: int = 32
    layers: int = 2
    heads: int = 2
    dropout: float = 0.1
    #: per-relation linear bias of each endpoint in the link score (absent from models saved before it)
    link_bias: bool = True
    node_types: list[str] = field(default_factory=lambda: list(NODE_TYPES))
    edge_types: list[list[str]] = field(default_factory=lambda: [list(et) for et in EDGE_TYPES])

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden size {self.hidden} must be divisible by the number of heads {self.heads}")
        if self.layers < 1:
            raise ValueError("the HGT needs at least one layer")

    @property
    def metadata(self) -> tuple[list[str], list[EdgeType]]:
        return list(self.node_types), [tuple(et) for et in self.edge_types]  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HGTConfig":
        return cls(**{"link_bias": False, **dict(d)})


class HGTModel(nn.Module):
    def __init__(self, config: HGTConfig) -> None:
        super().__init__()
        self.config = config
        self.lin_in = nn.ModuleDict({t: nn.Linear(config.in_dims[t], config.hidden) for t in config.node_types})
        self.convs = nn.ModuleList(
            HGTConv(config.hidden, config.hidden, config.metadata, heads=config.heads) for _ in range(config.layers)
        )
        # per-type LayerNorm after each layer keeps attention logits in range (training diverges without)
        self.norms = nn.ModuleList(
            nn.ModuleDict({t: nn.LayerNorm(config.hidden) for t in config.node_types}) for _ in range(config.layers)
        )
        self.lin_out = nn.ModuleDict({t: nn.Linear(config.hidden, config.out_dim) for t in config.node_types})
        # the node's own projected features also reach the output directly ("jumping knowledge"), so
        # what it is (activity, popularity, identity) is not washed out by neighbourhood averaging
        self.lin_skip = nn.ModuleDict({t: nn.Linear(config.hidden, config.out_dim, bias=False) for t in config.node_types})
        # a diagonal relation per interaction type for the link score (DistMult): calls can weigh the
        # community dimensions, orders the activity and popularity ones, from the same embeddings
        self.rel = nn.ParameterDict(
            {"-".join(et): nn.Parameter(torch.ones(config.out_dim)) for et in config.metadata[1] if not et[1].startswith("rev_")}
        )
        # and a linear bias per endpoint: how active a user / popular a target is overall, additively,
        # which the degree baseline ranks by and a product of embeddings captures only indirectly
        self.bias_src = nn.ParameterDict(
            {k: nn.Parameter(torch.zeros(config.out_dim)) for k in self.rel} if config.link_bias else {}
        )
        self.bias_dst = nn.ParameterDict(
            {k: nn.Parameter(torch.zeros(config.out_dim)) for k in self.rel} if config.link_bias else {}
        )
        self.dropout = nn.Dropout(config.dropout)

    def inputs(self, x: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {t: self.dropout(F.relu(self.lin_in[t](v))) for t, v in x.items()}

    def layer(self, i: int, h: Mapping[str, Tensor], edge_index: Mapping[EdgeType, Tensor]) -> dict[str, Tensor]:
        """``HGTConv`` layer ``i`` (then its norm and dropout) over these edges, from the conv's parameters
        (:mod:`scoring.hgt_layer`: each relation's transforms as one batched product, about twice as fast
        as the conv's own path on the CPU, autograd included)."""
        conv = self.convs[i]
        live = {et: ei for et, ei in edge_index.items() if ei.shape[1]}
        proj = project(conv, kqv(conv, h), live)
        res: dict[str, Tensor] = {}
        for t, x in h.items():
            edges = {et: (ei[0], ei[1], ei[1]) for et, ei in live.items() if et[2] == t}
            res[t] = finish(conv, self.norms[i][t], t, x, attend(conv, proj, edges, x.shape[0]))
        if i < len(self.convs) - 1:
            res = {t: self.dropout(v) for t, v in res.items()}
        return res

    def seed_layer(
        self,
        i: int,
        h: Mapping[str, Tensor],
        edge_index: Mapping[EdgeType, Tensor],
        n_seed: Mapping[str, int],
        sources: Mapping[EdgeType, tuple[Tensor, Tensor]] | None = None,
    ) -> dict[str, Tensor]:
        """``layer(i, ...)``'s outputs for the first ``n_seed[t]`` nodes of each type only, when every
        edge points into one of them (a 1-hop sample around the seeds, as the layer-wise refresh takes).

        Why not ``HGTConv`` itself: it computes queries and outputs for every node it is given and
        applies each edge type's key/value transform to every node of the source type, once per edge
        type; around a refresh batch most nodes are neighbours whose outputs are thrown away, so about
        four fifths of that work is wasted. This applies the same conv's parameters (``kqv_lin``,
        ``k_rel``, ``v_rel``, ``p_rel``, ``out_lin``, ``skip``) to the edges' distinct sources and to the
        seeds only; ``tests/test_sampler.py`` pins it to ``layer`` on the seeds. ``sources`` are the edges'
        distinct sources per edge type as ``torch.unique(ei[0], return_inverse=True)`` gives them: the
        same for every layer of a batch, so a caller running several layers computes them once."""
        conv = self.convs[i]
        split = kqv(conv, h)
        offset: dict[str, int] = {}
        total = 0
        for t in h:
            offset[t] = total
            total += int(n_seed.get(t, 0))
        live = {et: ei for et, ei in edge_index.items() if ei.shape[1]}
        uniq = {et: sources[et] if sources is not None else torch.unique(ei[0], return_inverse=True)
                for et, ei in live.items()}
        proj = project(conv, split, live, {et: u for et, (u, _) in uniq.items()})
        edges = {et: (uniq[et][1], ei[1], ei[1] + offset[et[2]]) for et, ei in live.items()}
        agg = attend(conv, proj, edges, total)
        out: dict[str, Tensor] = {}
        for t, x in h.items():
            ns = int(n_seed.get(t, 0))
            out[t] = finish(conv, self.norms[i][t], t, x[:ns], agg[offset[t]: offset[t] + ns])
        if i < len(self.convs) - 1:
            out = {t: self.dropout(v) for t, v in out.items()}
        return out

    def full_layer(self, i: int, h: Mapping[str, Tensor], incoming: IncomingEdges, chunk_edges: int) -> dict[str, Tensor]:
        """``layer(i, ...)`` over a whole graph (no autograd needed): the projections made once, then the
        destination nodes in consecutive ranges of at most ``chunk_edges`` incoming edges (memory bounded
        by the chunk), each gathering its edges' rows of the projections."""
        conv = self.convs[i]
        split = kqv(conv, h)
        out: dict[str, Tensor] = {}
        for t in h:
            into = incoming.into(t)
            proj = project(conv, split, [et for et, _ in into])  # this type's sources only: bounded memory
            out[t] = torch.empty_like(h[t])
            for a, b in incoming.ranges(t, chunk_edges):
                edges = {}
                for et, (src, dst, ptr) in into:
                    lo, hi = int(ptr[a]), int(ptr[b])
                    edges[et] = (src[lo:hi], dst[lo:hi], dst[lo:hi] - a)
                out[t][a:b] = finish(conv, self.norms[i][t], t, h[t][a:b], attend(conv, proj, edges, b - a))
            del proj
        if i < len(self.convs) - 1:
            out = {t: self.dropout(v) for t, v in out.items()}
        return out

    def relation(self, et: EdgeType) -> Tensor:
        return self.rel["-".join(et)]

    def score(self, et: EdgeType, a: Tensor, b: Tensor) -> Tensor:
        """Link score of aligned pairs (``a[i]``, ``b[i]``) of edge type ``et``: [n, d] x [n, d] -> [n]."""
        return link_score(a, b, self.relation(et), *self._biases(et))

    def score_matrix(self, et: EdgeType, a: Tensor, b: Tensor) -> Tensor:
        """Link scores of every pair: [n, d] x [m, d] -> [n, m]."""
        out = (a * self.relation(et)) @ b.T
        ws, wd = self._biases(et)
        if ws is not None and wd is not None:
            out = out + (a @ ws)[:, None] + (b @ wd)[None, :]
        return out

    def _biases(self, et: EdgeType) -> tuple[Tensor | None, Tensor | None]:
        k = "-".join(et)
        return (self.bias_src[k], self.bias_dst[k]) if k in self.bias_src else (None, None)

    def outputs(self, h: Mapping[str, Tensor], h0: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {t: self.lin_out[t](v) + self.lin_skip[t](h0[t]) for t, v in h.items()}

    def forward(self, x: Mapping[str, Tensor], edge_index: Mapping[EdgeType, Tensor]) -> dict[str, Tensor]:
        h0 = self.inputs(x)
        h = h0
        for i in range(len(self.convs)):
            h = self.layer(i, h, edge_index)
        return self.outputs(h, h0)


def info_nce_shared(pos_logit: Tensor, neg_logit: Tensor, same: Tensor, temperature: float) -> Tensor:
    """InfoNCE against one pool of negatives shared by the batch (sampled softmax): ``pos_logit``: [B]
    scores of the positives; ``neg_logit``: [B, K] scores of each positive's source (or target) with
    the pool; ``same``: [B, K], True where the pool entry is the positive itself (left out). One
    [B, d] x [d, K] product instead of B x K gathered rows: much cheaper, and more negatives per
    positive for the same cost."""
    neg_logit = neg_logit.masked_fill(same, float("-inf"))
    logits = torch.cat([pos_logit[:, None], neg_logit], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def link_score(
    a: Tensor, b: Tensor, rel: Tensor | None = None, bias_src: Tensor | None = None, bias_dst: Tensor | None = None
) -> Tensor:
    """The link score the loss trains: dot product weighted by the edge type's relation vector (DistMult),
    plus each endpoint's linear bias when the model has them."""
    out = (a * b * rel).sum(-1) if rel is not None else (a * b).sum(-1)
    if bias_src is not None and bias_dst is not None:
        out = out + a @ bias_src + b @ bias_dst
    return out


class GraphEmbedder(nn.Module):
    """Feature encoder + HGT, trained jointly; the unit saved as a model version."""

    def __init__(self, encoder: HeteroFeatureEncoder, hgt: HGTModel) -> None:
        super().__init__()
        self.encoder = encoder
        self.hgt = hgt

    @classmethod
    def create(cls, enc: EncoderConfig, hidden: int, out_dim: int, layers: int, heads: int, dropout: float) -> "GraphEmbedder":
        encoder = HeteroFeatureEncoder(enc)
        cfg = HGTConfig(in_dims=encoder.out_dims, hidden=hidden, out_dim=out_dim, layers=layers, heads=heads, dropout=dropout)
        return cls(encoder, HGTModel(cfg))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def config(self) -> dict[str, Any]:
        return {"encoder": self.encoder.config.to_dict(), "hgt": self.hgt.config.to_dict()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "GraphEmbedder":
        encoder = HeteroFeatureEncoder(EncoderConfig.from_dict(config["encoder"]))
        return cls(encoder, HGTModel(HGTConfig.from_dict(config["hgt"])))

    # ---------------------------------------------------------------- forward passes

    def forward(
        self, graph: HeteroGraph, edge_index: Mapping[EdgeType, Tensor] | None = None, hidden: Hidden | None = None
    ) -> dict[str, Tensor]:
        """Whole graph (with autograd), optionally over another edge set: ``edge_index`` without the
        edges ``hidden`` names (forward type -> (src, dst)), which the degree features then leave out too."""
        self.encoder.bind(graph)
        x = self.encoder({t: graph.raw_features(t, hidden=hidden) for t in NODE_TYPES})
        return self.hgt(x, edge_index if edge_index is not None else graph.edge_index_dict())

    def forward_subgraph(self, graph: HeteroGraph, sub: Subgraph, hidden: Hidden | None = None) -> dict[str, Tensor]:
        """Outputs for every node of ``sub`` (seeds first), with autograd; ``hidden`` as in ``forward``."""
        self.encoder.bind(graph)
        x = self.encoder({t: graph.raw_features(t, sub.node_idx[t], hidden) for t in NODE_TYPES})
        return self.hgt(x, sub.edge_index)

    @torch.no_grad()
    def embed_seeds(self, graph: HeteroGraph, sampler: NeighborSampler, seeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Embeddings of ``seeds`` from a sampled subgraph around them (eval mode, no autograd)."""
        sub = sampler.sample(seeds)
        out = self.forward_subgraph(graph, sub)
        return {t: out[t][: sub.num_seeds[t]] for t in NODE_TYPES if sub.num_seeds.get(t)}

    @torch.no_grad()
    def refresh_layerwise(
        self, graph: HeteroGraph, sampler: NeighborSampler, seeds: Mapping[str, Tensor], cache: list[dict[str, Tensor]]
    ) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        """Embeddings of ``seeds`` computed one layer at a time over their 1-hop (sampled) neighbourhood,
        taking the neighbours' earlier-layer states from ``cache`` (historical embeddings, as in
        GNNAutoScale) instead of recomputing the L-hop neighbourhood, whose sampled size saturates on a
        small-world graph. Exact when the cached states are current. Returns the seeds' outputs and
        their new states per cached layer."""
        self.encoder.bind(graph)
        sub = sampler.sample(seeds)
        n_seed = {t: sub.num_seeds.get(t, 0) for t in NODE_TYPES}
        x = self.encoder({t: graph.raw_features(t, sub.node_idx[t]) for t in NODE_TYPES})
        h_local = self.hgt.inputs(x)
        h0_seed = {t: h_local[t][: n_seed[t]] for t in NODE_TYPES}
        new_states: list[dict[str, Tensor]] = []
        # a 1-hop sampler only samples edges into the seeds: no need to check (each check is a CUDA sync)
        one_hop = len(sampler.fanouts) == 1 or all(
            bool((ei[1] < n_seed[et[2]]).all()) for et, ei in sub.edge_index.items() if ei.numel()
        )
        sources = (
            {et: torch.unique(ei[0], return_inverse=True) for et, ei in sub.edge_index.items() if ei.shape[1]}
            if one_hop else None
        )
        for i in range(len(self.hgt.convs)):
            if one_hop:  # every edge points into a seed: only the seeds' outputs are computed
                seed_h = self.hgt.seed_layer(i, h_local, sub.edge_index, n_seed, sources)
            else:
                out = self.hgt.layer(i, h_local, sub.edge_index)
                seed_h = {t: out[t][: n_seed[t]] for t in NODE_TYPES}
            if i < len(self.hgt.convs) - 1:
                new_states.append(seed_h)
                # next layer: the seeds' fresh states, the neighbours' cached ones
                h_local = {
                    t: torch.cat([seed_h[t], cache[i][t][sub.node_idx[t][n_seed[t]:]]]) for t in NODE_TYPES
                }
            else:
                h_final = seed_h
        out = self.hgt.outputs(h_final, h0_seed)
        return {t: out[t] for t in NODE_TYPES if n_seed[t]}, new_states

    @torch.no_grad()
    def embed_all(
        self,
        graph: HeteroGraph,
        chunk_edges: int = 1_000_000,
        progress: Callable[[float, str], None] | None = None,
        keep: list[dict[str, Tensor]] | None = None,
    ) -> dict[str, Tensor]:
        """Embeddings of every node. Small graphs: one forward. Large graphs: layer by layer, each layer
        over chunks of destination nodes holding at most ``chunk_edges`` incoming edges (the 1-hop
        "all" subgraph of the chunk), so memory is bounded by the chunk, not the graph. ``keep``
        receives the hidden states after each layer but the last."""
        self.encoder.bind(graph)
        wide = device_chunk_edges(graph.device, self.hgt.config.hidden, chunk_edges)
        if wide > chunk_edges:
            try:
                return self._embed_all(graph, wide, progress, keep)
            except torch.OutOfMemoryError:  # the estimate was short: the configured size is known to fit
                torch.cuda.empty_cache()
                if keep is not None:
                    keep.clear()
        return self._embed_all(graph, chunk_edges, progress, keep)

    def _embed_all(
        self,
        graph: HeteroGraph,
        chunk_edges: int,
        progress: Callable[[float, str], None] | None,
        keep: list[dict[str, Tensor]] | None,
    ) -> dict[str, Tensor]:
        if graph.num_edges() <= chunk_edges and keep is None:
            return self.forward(graph)
        node_chunk = max(1, chunk_edges // 4)
        h: dict[str, Tensor] = {}
        for t in NODE_TYPES:
            n = graph.num_nodes(t)
            parts = []
            for a in range(0, n, node_chunk):
                idx = torch.arange(a, min(n, a + node_chunk), device=graph.device)
                parts.append(self.hgt.inputs(self.encoder({t: graph.raw_features(t, idx)}))[t])
            h[t] = torch.cat(parts) if parts else torch.zeros((0, self.hgt.config.hidden), device=graph.device)
        h0 = h
        incoming = IncomingEdges(graph)
        for i in range(len(self.hgt.convs)):
            h = self.hgt.full_layer(i, h, incoming, chunk_edges)
            if progress:
                progress((i + 1) / len(self.hgt.convs), f"layer {i + 1} of {len(self.hgt.convs)}")
            if keep is not None and i < len(self.hgt.convs) - 1:
                keep.append(h)
        return self.hgt.outputs(h, h0)


#: bytes of CUDA memory one edge of a layer takes, per hidden unit, with room to spare: HGTConv gathers
#: a key, query and value row per edge, weighs and sums the messages (a few hidden-sized rows each)
_BYTES_PER_EDGE_PER_HIDDEN = 64


def device_chunk_edges(device: torch.device, hidden: int, configured: int, share: float = 0.5, cap: int | None = None) -> int:
    """Edges per chunk of a layer-wise forward on ``device``: the configured size on the CPU (it bounds
    memory), on CUDA as many as ``share`` of the free memory holds (at most ``cap``), since each chunk
    costs a sampling pass of small kernels and host synchronisations, which dominate a GPU forward in
    small chunks, and the whole graph of a million users fits an H200 many times over."""
    if device.type != "cuda":
        return configured
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(free * share) // (_BYTES_PER_EDGE_PER_HIDDEN * hidden)
    return max(configured, fits if cap is None else min(cap, fits))


def _edge_bounded_chunks(graph: HeteroGraph, node_type: str, budget: int) -> list[Tensor]:
    """Consecutive node ranges of ``node_type`` whose incoming edges (all types) add up to <= budget
    (a single node with more edges than that is a chunk of its own)."""
    n = graph.num_nodes(node_type)
    if n == 0:
        return []
    nodes = torch.arange(n, device=graph.device)
    deg = torch.ones(n, dtype=torch.long, device=graph.device)  # count the node itself too
    for et in EDGE_TYPES:
        if et[2] == node_type:
            deg += graph.adjacency(et).in_degree(nodes)
    chunk_id = (torch.cumsum(deg, 0) - 1) // budget
    _, counts = torch.unique_consecutive(chunk_id, return_counts=True)
    return list(torch.split(nodes, counts.tolist()))


__all__ = ["HGTConfig", "HGTModel", "GraphEmbedder", "Hidden", "info_nce_shared", "link_score"]
