"""The choice between PyG's sampler (when pyg-lib imports) and the vectorised one, and the PyG path
itself: pyg-lib does not install here, so its sampling op is simulated by a plain-Python
implementation of its contract (CSC input, fan-out -1 = every neighbour, local row/col, edge
positions in PyG's CSC order) and PyG's own ``NeighborSampler`` runs around it."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
import torch
import torch_geometric.typing

import scoring.sampler as sampler_mod
from graph_fixtures import random_graph, random_model
from scoring.graph_schema import EDGE_TYPES, NODE_TYPES
from scoring.sampler import NeighborSampler, PygNeighborSampler, make_sampler, pyg_lib_available


def _fake_hetero_neighbor_sample(node_types: list[str], edge_types: list[tuple[str, str, str]], colptr_dict: dict[str, torch.Tensor],
                                 row_dict: dict[str, torch.Tensor], seed_dict: dict[str, torch.Tensor], num_neighbors: dict[str, list[int]],
                                 *rest: Any) -> tuple[dict, dict, dict, dict]:
    """pyg-lib's ``hetero_neighbor_sample`` for every-neighbour fan-outs, directional: at each hop the
    incoming edges (CSC) of the nodes first reached at the previous hop."""
    nodes: dict[str, list[int]] = {t: [] for t in node_types}
    local: dict[str, dict[int, int]] = {t: {} for t in node_types}

    def add(t: str, v: int) -> bool:
        if v in local[t]:
            return False
        local[t][v] = len(nodes[t])
        nodes[t].append(v)
        return True

    frontier = {t: [v for v in seed_dict.get(t, torch.empty(0, dtype=torch.long)).tolist() if add(t, v)] for t in node_types}
    rels = {et: "__".join(et) for et in edge_types}
    rows: dict[str, list[int]] = {r: [] for r in rels.values()}
    cols: dict[str, list[int]] = {r: [] for r in rels.values()}
    edges: dict[str, list[int]] = {r: [] for r in rels.values()}
    hops = len(next(iter(num_neighbors.values())))
    assert all(n == -1 for v in num_neighbors.values() for n in v), "the simulation covers fan-out 'all' only"
    for _ in range(hops):
        nxt: dict[str, list[int]] = {t: [] for t in node_types}
        for et, rel in rels.items():
            colptr, row = colptr_dict[rel].tolist(), row_dict[rel].tolist()
            for v in frontier[et[2]]:
                for pos in range(colptr[v], colptr[v + 1]):
                    u = row[pos]
                    if add(et[0], u):
                        nxt[et[0]].append(u)
                    rows[rel].append(local[et[0]][u])
                    cols[rel].append(local[et[2]][v])
                    edges[rel].append(pos)
        frontier = nxt
    long = lambda d: {k: torch.tensor(v, dtype=torch.long) for k, v in d.items()}  # noqa: E731
    return long(rows), long(cols), long(nodes), long(edges)


@pytest.fixture
def pyg_lib_simulated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampler_mod, "HAS_PYG_LIB", True)
    monkeypatch.setattr(torch_geometric.typing, "WITH_PYG_LIB", True)
    monkeypatch.setattr(torch_geometric.typing, "WITH_EDGE_TIME_NEIGHBOR_SAMPLE", False, raising=False)
    monkeypatch.setattr(torch_geometric.typing, "WITH_WEIGHTED_NEIGHBOR_SAMPLE", False, raising=False)
    monkeypatch.setattr(torch.ops.pyg, "hetero_neighbor_sample", _fake_hetero_neighbor_sample, raising=False)


def test_availability_follows_whether_pyg_lib_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyg_lib", types.ModuleType("pyg_lib"))
    assert pyg_lib_available() is True
    monkeypatch.setitem(sys.modules, "pyg_lib", None)  # what Python does for a module that cannot import
    assert pyg_lib_available() is False


def test_training_prefers_pyg_when_pyg_lib_imports_the_live_graph_never(monkeypatch: pytest.MonkeyPatch) -> None:
    g = random_graph(seed=1)
    monkeypatch.setattr(sampler_mod, "HAS_PYG_LIB", False)
    assert type(make_sampler(g, "all,all", static=True)) is NeighborSampler
    monkeypatch.setattr(sampler_mod, "HAS_PYG_LIB", True)
    chosen = make_sampler(g, [3, None], static=True)
    assert isinstance(chosen, PygNeighborSampler)
    assert chosen.sampler.num_neighbors.get_mapped_values(EDGE_TYPES) == {"__".join(et): [3, -1] for et in EDGE_TYPES}
    # the refresh samples a graph that grows under it: always the vectorised sampler
    assert type(make_sampler(g, "all,all", static=False)) is NeighborSampler


def test_pyg_path_gives_the_full_forward_and_the_graphs_edge_ids(pyg_lib_simulated: None) -> None:
    g = random_graph(seed=2)
    model = random_model(g, seed=3)
    sampler = make_sampler(g, "all,all", static=True)
    assert isinstance(sampler, PygNeighborSampler)
    assert any(p is not None for p in sampler.perm.values())  # PyG re-sorted edges: ids need mapping back
    seeds = {"user": torch.tensor([4, 1, 4, 30]), "app": torch.tensor([2]), "product": torch.tensor([0, 5])}
    sub = sampler.sample(seeds)
    assert sub.node_idx["user"][:3].tolist() == [4, 1, 30] and sub.num_seeds == {"user": 3, "app": 1, "product": 2}
    # the ids are the graph's own: local endpoints map back to the stored endpoints of those edges
    for et in EDGE_TYPES:
        ei, eid = sub.edge_index[et], sub.edge_id[et]
        if eid.numel():
            src, dst = g.adjacency(et).endpoints(eid)
            assert torch.equal(sub.node_idx[et[0]][ei[0]], src) and torch.equal(sub.node_idx[et[2]][ei[1]], dst)
    # and the same subgraph as the vectorised sampler's, so the seeds get the full-graph embeddings
    own = NeighborSampler(g, [None, None]).sample(seeds)
    for et in EDGE_TYPES:
        assert set(sub.edge_id[et].tolist()) == set(own.edge_id[et].tolist())
    with torch.no_grad():
        full = model(g)
        out = model.forward_subgraph(g, sub)
    for t in NODE_TYPES:
        torch.testing.assert_close(out[t][: sub.num_seeds[t]], full[t][sub.node_idx[t][: sub.num_seeds[t]]], atol=1e-5, rtol=0)
