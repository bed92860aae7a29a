"""k-hop neighbour sampling over the live graph, returning a subgraph with the seeds first.

PyG's ``NeighborLoader`` needs ``pyg-lib`` or ``torch-sparse``; neither installs here, so this is a
small vectorised sampler over the graph's per-edge-type CSR (torch ops on the graph's device). With
``pyg_lib`` importable, ``make_sampler`` uses PyG's ``NeighborSampler`` for static graphs instead.

Edges are taken towards the frontier: at hop h the incoming edges of the nodes first reached at hop
h-1. With fan-out "all" (``None``) for every hop this is the seeds' exact L-hop computation graph,
so an L-layer model gives the seeds the same output as on the whole graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .graph_schema import EDGE_TYPES, NODE_TYPES, EdgeType
from .graph import HeteroGraph

Fanout = int | None  # None: all neighbours


def parse_fanouts(text: str | Sequence[int | str | None]) -> list[Fanout]:
    """``"10,5"`` / ``"all,all"`` / ``[10, "all"]`` -> ``[10, 5]`` / ``[None, None]`` / ``[10, None]``."""
    items = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    out: list[Fanout] = []
    for p in items:
        if p is None or (isinstance(p, str) and p.lower() in ("all", "-1")) or p == -1:
            out.append(None)
            continue
        try:
            v = int(p)
        except (TypeError, ValueError):
            raise ValueError(f"fan-out {p!r} is neither a positive whole number nor 'all'") from None
        if v < 1:
            raise ValueError(f"fan-out must be at least 1 or 'all', not {v}")
        out.append(v)
    if not out:
        raise ValueError("fan-outs must name at least one hop, e.g. '10,5' or 'all,all'")
    return out


@dataclass
class Subgraph:
    """Node ``node_idx[t][i]`` (a global index) is local node ``i`` of type ``t``; seeds come first."""

    node_idx: dict[str, Tensor]
    num_seeds: dict[str, int]
    edge_index: dict[EdgeType, Tensor] = field(default_factory=dict)  # local [2, E]
    edge_id: dict[EdgeType, Tensor] = field(default_factory=dict)  # ids into the graph's edge lists

    def num_nodes(self, node_type: str | None = None) -> int:
        if node_type is None:
            return sum(int(v.numel()) for v in self.node_idx.values())
        return int(self.node_idx[node_type].numel())

    def num_edges(self) -> int:
        return sum(int(v.shape[1]) for v in self.edge_index.values())

    def to_hetero_data(self) -> Any:
        """The same subgraph as a PyG ``HeteroData`` (``n_id``, ``num_seeds``, ``e_id``)."""
        from torch_geometric.data import HeteroData

        data = HeteroData()
        for t, idx in self.node_idx.items():
            data[t].n_id = idx
            data[t].num_nodes = int(idx.numel())
            data[t].num_seeds = self.num_seeds.get(t, 0)
        for et, ei in self.edge_index.items():
            data[et].edge_index = ei
            data[et].e_id = self.edge_id[et]
        return data


class NeighborSampler:
    """Vectorised k-hop in-neighbour sampler over a :class:`HeteroGraph` (seeds first, per type)."""

    def __init__(self, graph: HeteroGraph, fanouts: Sequence[Fanout] | str, *, seed: int | None = None) -> None:
        self.graph = graph
        self.fanouts = parse_fanouts(fanouts) if isinstance(fanouts, str) else list(fanouts)
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator(device=graph.device)
            self.generator.manual_seed(seed)
        # global index -> local index, -1 when absent; reset after each call (only touched entries)
        self._scratch: dict[str, Tensor] = {}

    def _map(self, t: str) -> Tensor:
        n = self.graph.num_nodes(t)
        m = self._scratch.get(t)
        if m is None or m.numel() < n:
            m = torch.full((max(n, 16) * 2,), -1, dtype=torch.long, device=self.graph.device)
            self._scratch[t] = m
        return m

    def sample(self, seeds: Mapping[str, Tensor | Sequence[int]]) -> Subgraph:
        """All seeds' k-hop subgraph in one go (one gather per hop and edge type for every seed)."""
        dev = self.graph.device
        maps = {t: self._map(t) for t in NODE_TYPES}
        parts: dict[str, list[Tensor]] = {t: [] for t in NODE_TYPES}
        count = {t: 0 for t in NODE_TYPES}
        frontier: dict[str, Tensor] = {}
        num_seeds: dict[str, int] = {}
        try:
            for t in NODE_TYPES:
                s = torch.as_tensor(seeds.get(t, []), dtype=torch.long, device=dev).reshape(-1)
                if s.numel():
                    n = self.graph.num_nodes(t)
                    if bool(((s < 0) | (s >= n)).any()):  # (one device sync, not two)
                        raise IndexError(f"seed index out of range for node type {t!r} ({n} nodes)")
                    s = _unique_keep_order(s)
                    maps[t][s] = torch.arange(s.numel(), device=dev)
                    parts[t].append(s)
                    count[t] = s.numel()
                frontier[t] = s
                num_seeds[t] = int(s.numel())
            edges: dict[EdgeType, list[tuple[Tensor, Tensor]]] = {et: [] for et in EDGE_TYPES}
            for fanout in self.fanouts:
                new_frontier: dict[str, list[Tensor]] = {t: [] for t in NODE_TYPES}
                for et in EDGE_TYPES:
                    src_t, _, dst_t = et
                    f = frontier.get(dst_t)
                    if f is None or f.numel() == 0:
                        continue
                    adj = self.graph.adjacency(et)
                    eids = adj.incoming(f, fanout, self.generator)
                    if eids.numel() == 0:
                        continue
                    src, dst = adj.endpoints(eids)
                    m = maps[src_t]
                    unseen = torch.unique(src[m[src] < 0])
                    if unseen.numel():
                        m[unseen] = torch.arange(count[src_t], count[src_t] + unseen.numel(), device=dev)
                        count[src_t] += unseen.numel()
                        parts[src_t].append(unseen)
                        new_frontier[src_t].append(unseen)
                    local = torch.stack([m[src], maps[dst_t][dst]])
                    edges[et].append((local, eids))
                frontier = {
                    t: torch.cat(v) if v else torch.empty(0, dtype=torch.long, device=dev)
                    for t, v in new_frontier.items()
                }
            node_idx = {
                t: torch.cat(v) if v else torch.empty(0, dtype=torch.long, device=dev) for t, v in parts.items()
            }
        finally:
            for t, v in parts.items():
                if v:
                    maps[t][torch.cat(v)] = -1
        sub = Subgraph(node_idx, num_seeds)
        for et, lst in edges.items():
            if lst:
                sub.edge_index[et] = torch.cat([e for e, _ in lst], dim=1)
                sub.edge_id[et] = torch.cat([i for _, i in lst])
            else:
                sub.edge_index[et] = torch.empty((2, 0), dtype=torch.long, device=dev)
                sub.edge_id[et] = torch.empty(0, dtype=torch.long, device=dev)
        return sub


def _first_positions(x: Tensor) -> Tensor:
    """Positions of the first occurrence of each distinct value of ``x``, in order."""
    uniq, inv = torch.unique(x, return_inverse=True)
    if uniq.numel() == x.numel():
        return torch.arange(x.numel(), device=x.device)
    first = torch.full((uniq.numel(),), x.numel(), dtype=torch.long, device=x.device)
    first.scatter_reduce_(0, inv, torch.arange(x.numel(), device=x.device), "amin")
    return torch.sort(first).values


def _unique_keep_order(x: Tensor) -> Tensor:
    """Distinct values of ``x`` in first-occurrence order."""
    return x[_first_positions(x)]


def merge_subgraphs(parts: Sequence[Subgraph]) -> Subgraph:
    """One subgraph from several sampled around different seed sets (PyG samples one seed type at a
    time): every part's seeds first, then the other nodes; edges de-duplicated by edge id."""
    dev = next(iter(parts[0].node_idx.values())).device
    node_idx: dict[str, Tensor] = {}
    num_seeds: dict[str, int] = {}
    for t in NODE_TYPES:
        seeds = [p.node_idx[t][: p.num_seeds.get(t, 0)] for p in parts if t in p.node_idx]
        rest = [p.node_idx[t][p.num_seeds.get(t, 0) :] for p in parts if t in p.node_idx]
        s = _unique_keep_order(torch.cat(seeds)) if seeds else torch.empty(0, dtype=torch.long, device=dev)
        allv = torch.cat([s, *rest]) if rest else s
        node_idx[t] = _unique_keep_order(allv) if allv.numel() else allv
        num_seeds[t] = int(s.numel())
    sub = Subgraph(node_idx, num_seeds)
    for et in EDGE_TYPES:
        src_t, _, dst_t = et
        glob: list[Tensor] = []
        ids: list[Tensor] = []
        for p in parts:
            ei = p.edge_index.get(et)
            if ei is None or ei.numel() == 0:
                continue
            glob.append(torch.stack([p.node_idx[src_t][ei[0]], p.node_idx[dst_t][ei[1]]]))
            ids.append(p.edge_id[et])
        if not ids:
            sub.edge_index[et] = torch.empty((2, 0), dtype=torch.long, device=dev)
            sub.edge_id[et] = torch.empty(0, dtype=torch.long, device=dev)
            continue
        g, e = torch.cat(glob, dim=1), torch.cat(ids)
        first = _first_positions(e)
        g = g[:, first]
        sub.edge_index[et] = torch.stack([_local(node_idx[src_t], g[0]), _local(node_idx[dst_t], g[1])])
        sub.edge_id[et] = e[first]
    return sub


def _local(nodes: Tensor, glob: Tensor) -> Tensor:
    order = torch.argsort(nodes)
    return order[torch.searchsorted(nodes[order], glob)]


def pyg_lib_available() -> bool:
    """Whether PyG's compiled sampling backend imports (it does not install here: see the module docstring)."""
    try:
        import pyg_lib  # noqa: F401
    except ImportError:
        return False
    return True


#: checked once at import; ``make_sampler`` reads it at call time (tests simulate availability by patching it)
HAS_PYG_LIB = pyg_lib_available()


class PygNeighborSampler:
    """PyG's ``NeighborSampler`` (pyg-lib) over a snapshot of the graph, one seed type at a time, merged.

    Only for graphs that do not change while sampling (training); the live refresh keeps using
    :class:`NeighborSampler`, whose CSR follows appended edges without a rebuild.
    """

    def __init__(self, graph: HeteroGraph, fanouts: Sequence[Fanout]) -> None:
        from torch_geometric.sampler import NeighborSampler as PygSampler

        self.graph = graph
        self.data = graph.to_hetero_data()
        num = {et: [(-1 if f is None else f) for f in fanouts] for et in EDGE_TYPES}
        self.sampler = PygSampler(self.data, num_neighbors=num, subgraph_type="directional")
        # PyG samples over its CSC copy of the edges and reports positions in it; this maps them back
        # to the graph's edge ids (what ``NeighborLoader`` does with ``edge_permutation``)
        self.perm: dict[EdgeType, Tensor | None] = {
            et: (p.to(graph.device) if p is not None else None) for et, p in (self.sampler.perm or {}).items()
        }

    def sample(self, seeds: Mapping[str, Tensor | Sequence[int]]) -> Subgraph:
        from torch_geometric.sampler import NodeSamplerInput

        parts: list[Subgraph] = []
        for t, s in seeds.items():
            s = torch.as_tensor(s, dtype=torch.long)
            if s.numel() == 0:
                continue
            s = _unique_keep_order(s)
            out = self.sampler.sample_from_nodes(NodeSamplerInput(input_id=None, node=s.cpu(), input_type=t))
            node_idx = {nt: out.node[nt].to(self.graph.device) for nt in out.node}
            sub = Subgraph(node_idx, {t: int(s.numel())})
            for et in out.row:
                e_type = tuple(et) if not isinstance(et, tuple) else et
                # PyG's row/col are local (src, dst) of the sampled edges; its edge ids are global
                sub.edge_index[e_type] = torch.stack([out.row[et], out.col[et]]).to(self.graph.device)
                eid = out.edge[et].to(self.graph.device)
                perm = self.perm.get(e_type)
                sub.edge_id[e_type] = perm[eid] if perm is not None else eid
            parts.append(sub)
        return merge_subgraphs(parts)


def make_sampler(graph: HeteroGraph, fanouts: Sequence[Fanout] | str, *, static: bool, seed: int | None = None) -> NeighborSampler | PygNeighborSampler:
    """PyG's sampler for a static graph (training) when pyg-lib is installed, the vectorised one
    otherwise and always for the live graph (PyG's CSC copy would not follow appended edges)."""
    fan = parse_fanouts(fanouts) if isinstance(fanouts, str) else list(fanouts)
    if static and HAS_PYG_LIB:
        return PygNeighborSampler(graph, fan)
    return NeighborSampler(graph, fan, seed=seed)


__all__ = [
    "Fanout",
    "parse_fanouts",
    "Subgraph",
    "NeighborSampler",
    "PygNeighborSampler",
    "merge_subgraphs",
    "make_sampler",
    "HAS_PYG_LIB",
    "pyg_lib_available",
]
