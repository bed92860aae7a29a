"""Incoming edges per destination node (CSR), kept current as edges are appended."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .graph_buffers import Growable
from .graph_schema import FORWARD_OF, EdgeType

if TYPE_CHECKING:
    from .graph import HeteroGraph


class CSR:
    """Incoming edges grouped by destination over a range of edge ids (``perm`` holds the edge ids)."""

    def __init__(self, dst: Tensor, first_eid: int, num_nodes: int) -> None:
        order = torch.sort(dst, stable=True).indices
        self.perm = order + first_eid
        counts = torch.bincount(dst, minlength=num_nodes) if dst.numel() else torch.zeros(num_nodes, dtype=torch.long, device=dst.device)
        self.rowptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=dst.device)
        torch.cumsum(counts, 0, out=self.rowptr[1:])
        self.num_nodes = num_nodes
        self._host: tuple[np.ndarray, np.ndarray] | None = None

    def host(self, src_col: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(rowptr, the source node of each edge in row order) as numpy arrays (``src_col``: the sources
        by edge id), made once."""
        if self._host is None:
            self._host = self.rowptr.cpu().numpy(), src_col[self.perm].cpu().numpy()
        return self._host

    def degree(self, nodes: Tensor) -> Tensor:
        if self.num_nodes == 0:
            return torch.zeros_like(nodes)
        inside = nodes < self.num_nodes
        v = torch.where(inside, nodes, torch.zeros_like(nodes))
        deg = self.rowptr[v + 1] - self.rowptr[v]
        return torch.where(inside, deg, torch.zeros_like(deg))

    def gather_all(self, nodes: Tensor) -> Tensor:
        """Edge ids of all incoming edges of ``nodes`` (vectorised segment gather)."""
        deg = self.degree(nodes)
        total = int(deg.sum())
        if total == 0:
            return torch.empty(0, dtype=torch.long, device=nodes.device)
        starts = self.rowptr[torch.where(nodes < self.num_nodes, nodes, torch.zeros_like(nodes))]
        seg = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), deg)
        offs = torch.arange(total, device=nodes.device) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
        return self.perm[starts[seg] + offs]

    def pick(self, nodes: Tensor, offsets: Tensor) -> Tensor:
        """Edge id at position ``offsets[i]`` among the incoming edges of ``nodes[i]``."""
        return self.perm[self.rowptr[nodes] + offsets]


class Adjacency:
    """Incoming edges per destination for one edge type: a CSR over most edges plus a small CSR over
    the newest ones, so appending edges never re-sorts the whole list (compacted past a threshold)."""

    def __init__(self, graph: "HeteroGraph", et: EdgeType) -> None:
        self.graph = graph
        self.et = et
        fwd, self.reverse = FORWARD_OF[et]
        self.table = graph.edges[fwd]
        self._base: CSR | None = None
        self._base_edges = 0
        self._delta: CSR | None = None
        self._delta_key: tuple[int, int] = (-1, -1)

    def _dst_col(self) -> Growable:
        return self.table.src if self.reverse else self.table.dst

    def _src_col(self) -> Growable:
        return self.table.dst if self.reverse else self.table.src

    @property
    def num_dst(self) -> int:
        return len(self.graph.nodes[self.et[2]])

    def _sync(self) -> tuple[CSR, CSR]:
        m = len(self.table)
        if self._base is None or (m - self._base_edges) > max(self.graph.compact_min, self._base_edges // 20):
            self._base = CSR(self._dst_col().view[:m], 0, self.num_dst)
            self._base_edges = m
            self._delta_key = (-1, -1)
        key = (m, self.num_dst)
        if self._delta is None or self._delta_key != key:
            self._delta = CSR(self._dst_col().view[self._base_edges : m], self._base_edges, self.num_dst)
            self._delta_key = key
        return self._base, self._delta

    def in_degree(self, nodes: Tensor) -> Tensor:
        base, delta = self._sync()
        return base.degree(nodes) + delta.degree(nodes)

    def incoming(self, nodes: Tensor, fanout: int | None, generator: torch.Generator | None = None) -> Tensor:
        """Edge ids of the incoming edges of ``nodes``: all of them (``fanout=None``), or up to
        ``fanout`` distinct ones per node drawn uniformly (with replacement, then de-duplicated: O(fanout)
        per node even for an app with a million users)."""
        base, delta = self._sync()
        if fanout is None:
            return torch.cat([base.gather_all(nodes), delta.gather_all(nodes)])
        db, dd = base.degree(nodes), delta.degree(nodes)
        deg = db + dd
        small = deg <= fanout
        parts = [base.gather_all(nodes[small]), delta.gather_all(nodes[small])]
        big = nodes[~small]
        if big.numel():
            bdb, bdeg = db[~small], deg[~small]
            r = torch.rand((big.numel(), fanout), device=nodes.device, generator=generator)
            pos = (r * bdeg.unsqueeze(1).to(r.dtype)).long().clamp_max_(bdeg.unsqueeze(1) - 1)
            rows = big.unsqueeze(1).expand_as(pos)
            in_base = pos < bdb.unsqueeze(1)
            eids = torch.empty_like(pos)
            eids[in_base] = base.pick(rows[in_base], pos[in_base])
            eids[~in_base] = delta.pick(rows[~in_base], (pos - bdb.unsqueeze(1))[~in_base])
            parts.append(torch.unique(eids))
        return torch.cat(parts)

    def host_parts(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The base's and the newest edges' (rowptr, source node of each edge in row order), as numpy
        arrays for :func:`rows_of` (made once per CSR)."""
        src = self._src_col().view
        return [csr.host(src) for csr in self._sync()]

    def endpoints(self, eids: Tensor) -> tuple[Tensor, Tensor]:
        """(src, dst) node indices of edge ids, in this edge type's direction."""
        return self._src_col().view[eids], self._dst_col().view[eids]


def rows_of(parts: list[tuple[np.ndarray, np.ndarray]], nodes: np.ndarray, num_cols: int) -> sp.csr_matrix:
    """Rows ``nodes`` of the sum of the CSR matrices ``parts`` (rowptr, column of each entry; each entry
    counts 1; a node past a part's rows has none there) as one scipy CSR, each row the parts' entries one
    part after the other (not summed into one entry per column)."""
    nodes = np.asarray(nodes, dtype=np.int64)
    starts, counts = [], []
    for rowptr, _ in parts:
        inside = nodes < len(rowptr) - 1
        at = np.where(inside, nodes, 0)
        starts.append(rowptr[at])
        counts.append(np.where(inside, rowptr[at + 1] - starts[-1], 0))
    indptr = np.zeros(len(nodes) + 1, dtype=np.int64)
    np.cumsum(np.sum(counts, axis=0), out=indptr[1:])
    out = np.empty(int(indptr[-1]), dtype=np.int64)
    ahead = indptr[:-1].copy()
    for (_, cols), start, count in zip(parts, starts, counts):
        offs = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        out[np.repeat(ahead, count) + offs] = cols[np.repeat(start, count) + offs]
        ahead += count
    return sp.csr_matrix((np.ones(len(out)), out, indptr), shape=(len(nodes), num_cols))
