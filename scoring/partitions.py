"""Partitions of the graph for Cluster-GCN style training: users split by METIS over the call graph, and
the subgraph a partition induces (its nodes and every edge among them)."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from .graph import HeteroGraph
from .graph_schema import EDGE_TYPES, FORWARD_EDGE_TYPES, FORWARD_OF, NODE_TYPES, EdgeType
from .sampler import Subgraph


def metis_partitions(graph: HeteroGraph, part_users: int, seed: int) -> list[dict[str, Tensor]]:
    """Users split by METIS (pymetis) over the undirected call graph; each part also takes every
    product and app its users interacted with (the catalogue is small and shared)."""
    import pymetis

    n = graph.num_nodes("user")
    nparts = max(1, math.ceil(n / part_users))
    if nparts == 1:
        membership = np.zeros(n, dtype=np.int64)
    else:
        calls = graph.edges[("user", "calls", "user")]
        s, d = calls.src.view.cpu().numpy(), calls.dst.view.cpu().numpy()
        keep = s != d
        a = np.concatenate([s[keep], d[keep]])
        b = np.concatenate([d[keep], s[keep]])
        key = np.unique(a * n + b)  # undirected, without multi-edges
        a, b = key // n, key % n
        xadj = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(a, minlength=n), out=xadj[1:])
        opts = pymetis.Options(seed=seed)
        _, membership_list = pymetis.part_graph(nparts, adjacency=pymetis.CSRAdjacency(xadj, b), options=opts)
        membership = np.asarray(membership_list, dtype=np.int64)
    member = torch.as_tensor(membership, device=graph.device)
    parts = []
    for k in range(nparts):
        users = torch.nonzero(member == k).flatten()
        if users.numel() == 0:
            continue
        part = {"user": users}
        in_part = member == k
        for t in ("product", "app"):
            items = [e.dst.view[in_part[e.src.view]] for et, e in graph.edges.items() if et[2] == t]
            part[t] = torch.unique(torch.cat(items)) if items else torch.empty(0, dtype=torch.long, device=graph.device)
        parts.append(part)
    return parts


def induced_subgraph(graph: HeteroGraph, nodes: Mapping[str, Tensor]) -> tuple[Subgraph, dict[EdgeType, tuple[Tensor, Tensor]]]:
    """The subgraph on ``nodes`` with every edge among them (both directions), and per forward type the
    local (src, dst) of those edges (the positives of a partition step)."""
    dev = graph.device
    local_of: dict[str, Tensor] = {}
    for t in NODE_TYPES:
        m = torch.full((graph.num_nodes(t),), -1, dtype=torch.long, device=dev)
        idx = nodes.get(t, torch.empty(0, dtype=torch.long, device=dev))
        m[idx] = torch.arange(idx.numel(), device=dev)
        local_of[t] = m
    sub = Subgraph({t: nodes.get(t, torch.empty(0, dtype=torch.long, device=dev)) for t in NODE_TYPES}, {t: 0 for t in NODE_TYPES})
    fwd_local: dict[EdgeType, tuple[Tensor, Tensor]] = {}
    for et in FORWARD_EDGE_TYPES:
        e = graph.edges[et]
        ls, ld = local_of[et[0]][e.src.view], local_of[et[2]][e.dst.view]
        ok = (ls >= 0) & (ld >= 0)
        fwd_local[et] = (ls[ok], ld[ok])
        ids = torch.nonzero(ok).flatten()
        for t_et in EDGE_TYPES:
            if FORWARD_OF[t_et][0] != et:
                continue
            rev = FORWARD_OF[t_et][1]
            sub.edge_index[t_et] = torch.stack([ld[ok], ls[ok]]) if rev else torch.stack([ls[ok], ld[ok]])
            sub.edge_id[t_et] = ids
    return sub, fwd_local
