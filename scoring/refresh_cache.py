"""The refresher's per-node state for the serving model: each node's last embedding (and whether it has
one), how much that embedding moved in its last refresh (a priority term), and the inner layers' hidden
states that a layer-wise refresh reads for the neighbours of the nodes it refreshes."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from storage.interface import Store

from .embed import layer_node_type
from .full_pass import FullPass
from .graph import HeteroGraph
from .graph_buffers import Growable
from .graph_schema import NODE_TYPES
from .model_io import LoadedModel


class NodeCaches:
    """Growable per-type buffers on the refresher's device, as long as the graph's node tables."""

    def __init__(self, device: torch.device, model: LoadedModel | None = None) -> None:
        self.device = device
        self.emb: dict[str, Growable] = {}
        self.has: dict[str, Growable] = {}
        self.change: dict[str, Growable] = {}
        self.layers: list[dict[str, Growable]] = []
        #: whether ``layers`` hold every node's current states (a layer-wise refresh needs them)
        self.layers_ready = False
        if model is not None:
            dim, hidden = int(model.config["hgt"]["out_dim"]), int(model.config["hgt"]["hidden"])
            self.emb = {t: Growable((dim,), torch.float32, device) for t in NODE_TYPES}
            self.has = {t: Growable((), torch.bool, device) for t in NODE_TYPES}
            self.change = {t: Growable((), torch.float32, device, fill=1.0) for t in NODE_TYPES}
            self.layers = [
                {t: Growable((hidden,), torch.float32, device) for t in NODE_TYPES}
                for _ in range(int(model.config["hgt"]["layers"]) - 1)
            ]
            self.layers_ready = not self.layers

    def _buffers(self, t: str) -> Iterator[Growable]:
        for bufs in (self.emb, self.has, self.change, *self.layers):
            if t in bufs:
                yield bufs[t]

    def grow(self, graph: HeteroGraph) -> None:
        """Extend every buffer to the graph's node count (new nodes: no embedding, change 1)."""
        for t in NODE_TYPES:
            n = graph.num_nodes(t)
            for buf in self._buffers(t):
                if buf.n < n:
                    buf.extend_fill(n - buf.n)

    def change_of(self, t: str, idx: torch.Tensor) -> np.ndarray:
        """The relative change of the nodes' last refresh (1 for nodes never embedded, or no model)."""
        if t not in self.change:
            return np.ones(idx.numel())
        return self.change[t].view[idx].cpu().numpy()

    def put(self, t: str, idx: torch.Tensor, new: torch.Tensor) -> None:
        """Record new embeddings of nodes ``idx`` and how far each moved from the last one."""
        old = self.emb[t].view[idx]
        had = self.has[t].view[idx]
        rel = torch.linalg.vector_norm(new - old, dim=1) / (torch.linalg.vector_norm(old, dim=1) + 1e-6)
        self.change[t].view[idx] = torch.where(had, rel, torch.ones_like(rel))
        self.emb[t].view[idx] = new
        self.has[t].view[idx] = True

    def load_stored(self, store: Store, graph: HeteroGraph, version: int) -> dict[str, torch.Tensor]:
        """Take in the stored embeddings of model ``version``, and the inner layers' states where the
        store has them for every embedded node (``ups embed`` writes them): the layer cache is then warm
        without a full pass. Per type, True where the embedding is at least as new as the node's last
        event (the others are to be refreshed). A node refreshed live since its states were stored keeps
        those: a layer-wise refresh reads its neighbours' states as they were last computed anyway."""
        current: dict[str, torch.Tensor] = {}
        complete, embedded = bool(self.layers), 0
        for t in NODE_TYPES:
            found, current[t] = self._load_rows(store, graph, t, version, self.emb[t], self.has[t])
            embedded += int(found.sum())
            for i, lay in enumerate(self.layers):
                found_i, _ = self._load_rows(store, graph, layer_node_type(t, i), version, lay[t], None, t)
                complete = complete and bool((found_i | ~found).all())
        if complete and embedded:
            self.layers_ready = True
        return current

    def _load_rows(self, store: Store, graph: HeteroGraph, kind: str, version: int, into: Growable,
                   has: Growable | None, node_type: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of ``kind`` (a node type, or a layer's states of ``node_type``) of ``version`` into
        ``into``; per node of the type, whether a row was found and whether it is at least as new as the
        node's last event."""
        t = node_type or kind
        index, last = graph.nodes[t].index, graph.nodes[t].last_seq.view
        idx, vecs, seqs = [], [], []
        for nid, vec, seq in store.embeddings.of_version(kind, version):
            i = index.get(nid)
            if i is not None:
                idx.append(i)
                vecs.append(vec)
                seqs.append(seq)
        found = torch.zeros(graph.num_nodes(t), dtype=torch.bool, device=self.device)
        ok = torch.zeros_like(found)
        if idx:
            ti = torch.as_tensor(idx, device=self.device)
            into.view[ti] = torch.as_tensor(np.stack(vecs), device=self.device)
            if has is not None:
                has.view[ti] = True
            found[ti] = True
            ok[ti] = torch.as_tensor(seqs, device=self.device) >= last[ti]
        return found, ok

    def take_pass(self, p: FullPass) -> None:
        """Every node's embedding and layer states from a finished pass of this model (a model switch)."""
        for t, n in p.num_nodes.items():
            self.emb[t].view[:n] = p.out[t]
            self.has[t].view[:n] = True
            for lay, st in zip(self.layers, p.layers):
                lay[t].view[:n] = st[t]
        self.layers_ready = True

    def take_pass_layers(self, p: FullPass, graph: HeteroGraph) -> None:
        """The layer states of a finished pass of the serving model, except where partial refreshes
        since the pass began are newer (once the cache is warm)."""
        for t, n in p.num_nodes.items():
            keep = (graph.nodes[t].last_seq.view[:n] <= p.snap_seq) if self.layers_ready else slice(None)
            for lay, st in zip(self.layers, p.layers):
                lay[t].view[:n][keep] = st[t][keep]
        self.layers_ready = True
