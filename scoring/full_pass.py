"""A full forward of the live graph split into small steps, so the incremental refresh can spread it
over many ticks (a new model version, a cold layer cache, a backlog covering much of the graph)
instead of stalling the dataflow for the length of a whole-graph forward.

The pass computes the graph as it was when it started (``snap_seq``): its first step takes every
node's input projection at once (features and degrees as they are then; no messages, so it is cheap:
~15 ms per 100k nodes here), nodes added later are left out, and so are edges added later (by id: edge
ids follow the append order). So every node the pass covers gets exactly what a one-shot forward of
the graph at ``snap_seq`` gives it. Nodes touched after the start are "dirty" (``last_seq`` past
``snap_seq``): the refresher does not write the pass's rows for them (they are pending again).

Each later step is one edge-bounded chunk of destination nodes of one layer (its 1-hop "all"
subgraph, as in ``GraphEmbedder.embed_all``); the last layer's chunks come out as finished
embeddings (:class:`PassChunk`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from .graph import EDGE_TYPES, NODE_TYPES, HeteroGraph
from .model import GraphEmbedder, _edge_bounded_chunks
from .sampler import NeighborSampler


@dataclass
class PassChunk:
    """Finished embeddings of a chunk of nodes of one type (global indices, all < the pass's node count)."""

    node_type: str
    idx: Tensor
    emb: Tensor


class FullPass:
    """``step()`` until ``done``; afterwards ``out`` holds every snapshot node's embedding and
    ``layers`` the hidden states after each layer but the last (the layer-wise refresh's cache)."""

    def __init__(self, embedder: GraphEmbedder, graph: HeteroGraph, chunk_edges: int) -> None:
        self.embedder = embedder.eval()
        self.graph = graph
        self.snap_seq = graph.last_seq
        self.num_nodes = {t: graph.num_nodes(t) for t in NODE_TYPES}
        self.edge_limit = {et: graph.num_edges(et) for et in EDGE_TYPES}
        # chunks of destination nodes bounded by their incoming edges; the graph's degrees may grow
        # during the pass, which only makes a chunk a little larger than planned
        self._layer_chunks = [
            (t, c[c < self.num_nodes[t]]) for t in NODE_TYPES for c in _edge_bounded_chunks(graph, t, chunk_edges)
        ]
        self._layer_chunks = [(t, c) for t, c in self._layer_chunks if c.numel()]
        n_layers = len(embedder.hgt.convs)
        self.total_steps = 1 + n_layers * len(self._layer_chunks)
        self.steps_done = 0
        self.done = False
        self.out: dict[str, Tensor] = {}
        self.layers: list[dict[str, Tensor]] = []
        self._sampler = NeighborSampler(graph, [None])
        self._steps = self._run()

    @property
    def progress(self) -> float:
        return self.steps_done / max(1, self.total_steps)

    def step(self) -> PassChunk | None:
        """One bounded piece of work; the finished embeddings of a chunk once in the last layer."""
        if self.done:
            return None
        try:
            got = next(self._steps)
        except StopIteration:
            got = None
        self.steps_done += 1
        if self.steps_done >= self.total_steps:
            self.done = True
        return got

    @torch.no_grad()
    def _run(self) -> Iterator[PassChunk | None]:
        hgt, enc, g = self.embedder.hgt, self.embedder.encoder, self.graph
        enc.bind(g)
        h0 = {t: hgt.inputs(enc({t: g.raw_features(t, torch.arange(n, device=g.device))}))[t] for t, n in self.num_nodes.items()}
        yield None
        h = h0
        last = len(hgt.convs) - 1
        self.out = {t: torch.empty((n, hgt.config.out_dim), device=g.device) for t, n in self.num_nodes.items()}
        for i in range(last + 1):
            new = {t: torch.empty_like(v) for t, v in h.items()} if i < last else {}
            for t, chunk in self._layer_chunks:
                sub = self._sampler.sample({t: chunk}, edge_limit=self.edge_limit)
                state = hgt.layer(i, {s: h[s][sub.node_idx[s]] for s in NODE_TYPES}, sub.edge_index)[t][: chunk.numel()]
                if i < last:
                    new[t][chunk] = state
                    yield None
                    continue
                emb = hgt.outputs({t: state}, {t: h0[t][chunk]})[t]
                self.out[t][chunk] = emb
                yield PassChunk(t, chunk, emb)
            if i < last:
                self.layers.append(new)
            h = new


__all__ = ["FullPass", "PassChunk"]
