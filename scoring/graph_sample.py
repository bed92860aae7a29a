"""A user sample of a graph already in memory: what ``build_graph(sample_ratio=r)`` reads from the store,
cut from the full graph instead (``ups init`` reads the store once, trains on the sample and embeds
the whole graph).

The same users are kept (the seeded hash of :func:`scoring.graph.keep_mask`), every product and app,
and the edges among kept nodes; each node keeps its attributes and gets the degree its kept edges
give it (its last event seq and time stay the full graph's: training reads neither). Nodes keep their order of the full graph, so indices differ from a sampled build's (which
registers nodes as its kept events first name them); ids, attributes and edges are the same.
"""

from __future__ import annotations

import torch

from .graph import HeteroGraph, keep_mask
from .graph_schema import FORWARD_EDGE_TYPES, NODE_TYPES


def sample_users(graph: HeteroGraph, ratio: float, seed: int) -> HeteroGraph:
    """The graph of a deterministic share ``ratio`` of ``graph``'s users (``graph`` itself at 1)."""
    if ratio >= 1.0:
        return graph
    out = HeteroGraph(graph.device, space=graph.space, sample_ratio=ratio, sample_seed=seed,
                      compact_min=graph.compact_min)
    new_index: dict[str, torch.Tensor] = {}
    for t in NODE_TYPES:
        table = graph.nodes[t]
        n = len(table)
        if t == "user":
            keep = torch.as_tensor(keep_mask(table.ids, ratio, seed), device=graph.device)
        else:
            keep = torch.ones(n, dtype=torch.bool, device=graph.device)
        kept = torch.nonzero(keep).flatten()
        index = torch.full((n,), -1, dtype=torch.long, device=graph.device)
        index[kept] = torch.arange(len(kept), device=graph.device)
        new_index[t] = index
        target = out.nodes[t]
        kept_list = kept.tolist()
        target.add([table.ids[i] for i in kept_list])
        for name in ("numeric", "categorical", "sequence", "last_seq", "last_ts"):
            getattr(target, name).view[:] = getattr(table, name).view[kept]
    for et in FORWARD_EDGE_TYPES:
        e = graph.edges[et]
        src, dst = new_index[et[0]][e.src.view], new_index[et[2]][e.dst.view]
        ok = (src >= 0) & (dst >= 0)
        out.edges[et].append(src[ok], dst[ok], e.ts.view[ok], e.seq.view[ok])
        for node_type, ends in ((et[0], src[ok]), (et[2], dst[ok])):
            deg = out.nodes[node_type].degree.view
            deg += torch.bincount(ends, minlength=deg.shape[0]).to(deg.dtype)
    out.last_seq = graph.last_seq
    return out
