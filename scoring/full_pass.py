"""A full forward of the live graph that does not stall the dataflow: split into small steps, run
either a few steps per refresh tick or on a background thread (the second core; torch releases the
GIL in its kernels), for a new model version, a cold layer cache, or a backlog covering much of the
graph.

The pass computes the graph as it was when it started (``snap_seq``). At the start, on the caller's
thread, it takes every node's input projection (features and degrees as they are then; no messages,
so it is cheap: ~15 ms per 100k nodes here) and views of the edge lists' filled prefix. Edge lists
only ever grow at the end, so those views never change, and the rest of the pass reads nothing else of
the live graph: it builds its own per-destination index over them. So every node the pass covers gets
exactly what a one-shot forward of the graph at ``snap_seq`` gives it. Nodes touched after the start
are "dirty" (``last_seq`` past ``snap_seq``): the refresher does not write the pass's rows for them
(they are pending again).

After the index is built, each step is one edge-bounded chunk of destination nodes of one layer (its
1-hop "all" subgraph, as in ``GraphEmbedder.embed_all``); the last layer's chunks come out as finished
embeddings (:class:`PassChunk`).
"""

from __future__ import annotations

import copy
import queue
import threading
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from .adjacency import CSR
from .graph import HeteroGraph
from .graph_schema import FORWARD_OF, NODE_TYPES, EdgeType
from .model import GraphEmbedder, _edge_bounded_chunks, device_chunk_edges
from .sampler import NeighborSampler


@dataclass
class PassChunk:
    """Finished embeddings of a chunk of nodes of one type (global indices, all < the pass's node count)."""

    node_type: str
    idx: Tensor
    emb: Tensor


class _FrozenAdjacency:
    """Incoming edges of one edge type over a fixed prefix of its edge list (what the sampler and the
    chunking need of an adjacency, for fan-out "all")."""

    def __init__(self, src: Tensor, dst: Tensor, num_dst: int) -> None:
        self.src, self.dst = src, dst
        self.csr = CSR(dst, 0, num_dst)

    def in_degree(self, nodes: Tensor) -> Tensor:
        return self.csr.degree(nodes)

    def incoming(self, nodes: Tensor, fanout: int | None, generator: torch.Generator | None = None) -> Tensor:
        if fanout is not None:
            raise ValueError("a full pass takes every neighbour")
        return self.csr.gather_all(nodes)

    def endpoints(self, eids: Tensor) -> tuple[Tensor, Tensor]:
        return self.src[eids], self.dst[eids]


class _FrozenGraph:
    """The live graph's structure as of the pass's start, from views of the edge lists' prefixes."""

    def __init__(self, graph: HeteroGraph, num_nodes: dict[str, int]) -> None:
        self.device = graph.device
        self._num = num_nodes
        # views, not copies: appends write past the prefix, and a reallocation leaves the old buffer as it was
        self._cols = {fwd: (t.src.data[: len(t)], t.dst.data[: len(t)]) for fwd, t in graph.edges.items()}
        self._adj: dict[EdgeType, _FrozenAdjacency] = {}

    def num_nodes(self, node_type: str) -> int:
        return self._num[node_type]

    def adjacency(self, et: EdgeType) -> _FrozenAdjacency:
        a = self._adj.get(et)
        if a is None:
            fwd, reverse = FORWARD_OF[et]
            src, dst = self._cols[fwd]
            if reverse:
                src, dst = dst, src
            a = self._adj[et] = _FrozenAdjacency(src, dst, self._num[et[2]])
        return a


class FullPass:
    """Construct (on the thread that owns the graph), then either ``step()`` until ``done`` or
    ``start_background()`` and ``collect()`` until ``done``. Afterwards ``out`` holds every snapshot
    node's embedding and ``layers`` the hidden states after each layer but the last (the layer-wise
    refresh's cache)."""

    def __init__(self, embedder: GraphEmbedder, graph: HeteroGraph, chunk_edges: int) -> None:
        self.hgt = embedder.eval().hgt
        self.snap_seq = graph.last_seq
        self.num_nodes = {t: graph.num_nodes(t) for t in NODE_TYPES}
        # on CUDA wider steps (a step of a few million edges still takes milliseconds there; 20 000-edge
        # steps made the pass cost ~15 direct forwards in sampling overhead), from a tenth of free memory
        self.chunk_edges = device_chunk_edges(graph.device, embedder.hgt.config.hidden, chunk_edges, share=0.1, cap=4_000_000)
        hgt, enc = embedder.hgt, embedder.encoder
        with torch.no_grad():
            enc.bind(graph)
            self._h0 = {
                t: hgt.inputs(enc({t: graph.raw_features(t, torch.arange(n, device=graph.device))}))[t]
                for t, n in self.num_nodes.items()
            }
        self._frozen = _FrozenGraph(graph, self.num_nodes)
        self._layers_n = len(hgt.convs)
        # until the index is built the chunk count is an estimate (edges / chunk size, per layer)
        self.total_steps = 1 + self._layers_n * max(1, graph.num_edges() // max(1, chunk_edges))
        self.steps_done = 0
        self.done = False
        self.out: dict[str, Tensor] = {}
        self.layers: list[dict[str, Tensor]] = []
        self._steps = self._layers()
        self._thread: threading.Thread | None = None
        self._results: queue.SimpleQueue[PassChunk | BaseException | None] = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._thread_finished = False

    @property
    def progress(self) -> float:
        return min(1.0, self.steps_done / max(1, self.total_steps))

    @property
    def background(self) -> bool:
        return self._thread is not None

    # ---------------------------------------------------------------- stepping on the caller's thread

    def step(self) -> PassChunk | None:
        """One bounded piece of work; the finished embeddings of a chunk once in the last layer."""
        if self.done:
            return None
        try:
            got = next(self._steps)
        except StopIteration:
            got = None
            self.done = True
        self.steps_done += 1
        return got

    # ---------------------------------------------------------------- on a background thread

    def start_background(self) -> None:
        """Run the remaining steps on a thread of its own, with its own copy of the model (modules
        are not shared across threads); ``collect()`` hands over what it has finished."""
        self.hgt = copy.deepcopy(self.hgt)
        self._steps = self._layers()
        self._thread = threading.Thread(target=self._work, name="ups-full-pass", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            while not self._cancel.is_set():
                try:
                    got = next(self._steps)
                except StopIteration:
                    break
                self.steps_done += 1
                if got is not None:
                    self._results.put(got)
            self._results.put(None)
        except BaseException as exc:  # handed to the owning thread by collect()
            self._results.put(exc)

    def collect(self, wait: bool = False) -> list[PassChunk]:
        """The chunks the background thread has finished since the last call (all of them, to the end,
        with ``wait``); ``done`` once it has finished them all. Re-raises the thread's error."""
        assert self._thread is not None
        if wait:
            self._thread.join()
        out: list[PassChunk] = []
        while True:
            try:
                got = self._results.get_nowait()
            except queue.Empty:
                return out
            if got is None:
                self.done = True
                return out
            if isinstance(got, BaseException):
                raise got
            out.append(got)

    def cancel(self, wait: bool = False) -> None:
        """Stop a background pass after its current step (a newer model superseded it); with ``wait``,
        return once its thread has ended (on close: a thread still inside torch when the interpreter
        exits aborts the process)."""
        self._cancel.set()
        if wait and self._thread is not None:
            self._thread.join()

    # ---------------------------------------------------------------- the work

    @torch.no_grad()  # on a generator: around each resume, on the thread that resumes it
    def _layers(self) -> Iterator[PassChunk | None]:
        hgt, g = self.hgt, self._frozen
        # first step: the per-destination index and the chunks (the index is most of this step)
        chunks = [(t, c) for t in NODE_TYPES for c in _edge_bounded_chunks(g, t, self.chunk_edges)]  # type: ignore[arg-type]
        self.total_steps = 1 + self._layers_n * len(chunks)
        sampler = NeighborSampler(g, [None])  # type: ignore[arg-type]
        yield None
        h = self._h0
        last = self._layers_n - 1
        self.out = {t: torch.empty((n, hgt.config.out_dim), device=g.device) for t, n in self.num_nodes.items()}
        for i in range(last + 1):
            new = {t: torch.empty_like(v) for t, v in h.items()} if i < last else {}
            for t, chunk in chunks:
                sub = sampler.sample({t: chunk})
                state = hgt.layer(i, {s: h[s][sub.node_idx[s]] for s in NODE_TYPES}, sub.edge_index)[t][: chunk.numel()]
                if i < last:
                    new[t][chunk] = state
                    yield None
                    continue
                emb = hgt.outputs({t: state}, {t: self._h0[t][chunk]})[t]
                self.out[t][chunk] = emb
                yield PassChunk(t, chunk, emb)
            if i < last:
                self.layers.append(new)
            h = new


__all__ = ["FullPass", "PassChunk"]
