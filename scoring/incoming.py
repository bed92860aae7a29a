"""A graph's edges grouped by destination node, per destination type: what a layer-wise full forward
walks in consecutive destination ranges (:meth:`scoring.model.HGTModel.full_layer`)."""

from __future__ import annotations

import torch
from torch import Tensor

from .graph import HeteroGraph
from .graph_schema import EDGE_TYPES, NODE_TYPES, EdgeType


class IncomingEdges:
    """For each edge type into a node type: its sources and destinations sorted by destination, and the
    row pointer (the edges of destination ``n`` are positions ``ptr[n]:ptr[n + 1]``)."""

    def __init__(self, graph: HeteroGraph) -> None:
        self.num_nodes = {t: graph.num_nodes(t) for t in NODE_TYPES}
        self._into: dict[str, list[tuple[EdgeType, tuple[Tensor, Tensor, Tensor]]]] = {t: [] for t in NODE_TYPES}
        for et in EDGE_TYPES:
            ei = graph.edge_index(et)
            n = self.num_nodes[et[2]]
            order = torch.sort(ei[1], stable=True).indices
            src, dst = ei[0][order], ei[1][order]
            ptr = torch.zeros(n + 1, dtype=torch.long, device=ei.device)
            torch.cumsum(torch.bincount(dst, minlength=n), 0, out=ptr[1:])
            self._into[et[2]].append((et, (src, dst, ptr)))

    def into(self, node_type: str) -> list[tuple[EdgeType, tuple[Tensor, Tensor, Tensor]]]:
        return self._into[node_type]

    def ranges(self, node_type: str, budget: int) -> list[tuple[int, int]]:
        """Consecutive destination ranges ``[a, b)`` whose incoming edges (all types, counting each node
        once more for itself) add up to at most ``budget`` (a node with more is a range of its own)."""
        n = self.num_nodes[node_type]
        if n == 0:
            return []
        into = self._into[node_type]
        deg = torch.ones(n, dtype=torch.long, device=into[0][1][2].device if into else "cpu")
        for _, (_, _, ptr) in into:
            deg += ptr[1:] - ptr[:-1]
        chunk_id = (torch.cumsum(deg, 0) - 1) // budget
        _, counts = torch.unique_consecutive(chunk_id, return_counts=True)
        ends = torch.cumsum(counts, 0).tolist()
        return list(zip([0, *ends[:-1]], ends))


__all__ = ["IncomingEdges"]
