"""The vectorised neighbour sampler: exact with fan-out "all", bounded otherwise, seeds first."""

from __future__ import annotations

import pytest
import torch

from graph_fixtures import random_events, random_graph, random_model
from test_hgt_layer import conv_layer
from scoring.graph_schema import EDGE_TYPES, NODE_TYPES
from scoring.sampler import NeighborSampler, merge_subgraphs, parse_fanouts


def _seeds(graph, k: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {t: torch.randperm(graph.num_nodes(t), generator=gen)[: min(k, graph.num_nodes(t))].to(graph.device) for t in NODE_TYPES}


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_fanout_all_gives_the_full_graph_forward(layers: int, device: torch.device) -> None:
    g = random_graph(seed=1, device=device)
    model = random_model(g, seed=2, layers=layers)
    with torch.no_grad():
        full = model(g)
    gen = torch.Generator().manual_seed(3)
    seeds = _seeds(g, 7, gen)
    out = model.embed_seeds(g, NeighborSampler(g, ["all"] * layers and [None] * layers), seeds)
    for t in NODE_TYPES:
        assert out[t].shape == (len(seeds[t]), 8)
        torch.testing.assert_close(out[t], full[t][seeds[t]], atol=1e-5, rtol=0)
    # and with too few hops the seeds' outputs differ: the check above can fail
    if layers > 1:
        short = model.embed_seeds(g, NeighborSampler(g, [None] * (layers - 1)), seeds)
        assert not torch.allclose(short["user"], full["user"][seeds["user"]], atol=1e-5)


def test_layerwise_chunked_forward_equals_full_forward(device: torch.device) -> None:
    g = random_graph(seed=4, device=device)
    model = random_model(g, seed=5)
    with torch.no_grad():
        full = model(g)
    chunked = model.embed_all(g, chunk_edges=150)  # far fewer than the graph's edges: many chunks per layer
    assert g.num_edges() > 150
    for t in NODE_TYPES:
        torch.testing.assert_close(chunked[t], full[t], atol=1e-5, rtol=0)


def test_sampled_subgraph_is_bounded_by_the_fanouts_and_puts_seeds_first(device: torch.device) -> None:
    g = random_graph(seed=6, device=device, n_inter=3000)
    fan = [3, 2]
    sampler = NeighborSampler(g, fan, seed=0)
    seeds = {"user": torch.tensor([5, 0, 9, 5], device=device), "app": torch.tensor([1], device=device)}
    sub = sampler.sample(seeds)
    assert sub.node_idx["user"][:3].tolist() == [5, 0, 9]  # de-duplicated, order kept
    assert sub.num_seeds == {"user": 3, "product": 0, "app": 1}
    assert sub.node_idx["app"][:1].tolist() == [1]
    for t in NODE_TYPES:
        assert sub.node_idx[t].unique().numel() == sub.node_idx[t].numel()
    # every destination gets at most `fanout` incoming edges per edge type at its hop
    hop_of: dict[str, dict[int, int]] = {t: {} for t in NODE_TYPES}
    for t in NODE_TYPES:
        for i in range(sub.num_seeds[t]):
            hop_of[t][i] = 0
    for et in EDGE_TYPES:
        ei = sub.edge_index[et]
        if ei.numel() == 0:
            continue
        counts = torch.bincount(ei[1])
        assert int(counts.max()) <= max(fan)
    for et in EDGE_TYPES:
        ei = sub.edge_index[et]
        seeds_dst = ei[1] < sub.num_seeds[et[2]]
        if seeds_dst.any():
            assert int(torch.bincount(ei[1][seeds_dst]).max()) <= fan[0]
    # total size bounded by seeds * (1 + f1 * |types| + f1 * f2 * |types|^2)
    n_seeds = sum(sub.num_seeds.values())
    bound = n_seeds * (1 + fan[0] * len(EDGE_TYPES) + fan[0] * fan[1] * len(EDGE_TYPES) ** 2)
    assert sub.num_nodes() <= bound
    # edges are real edges of the graph: local endpoints map back to the stored endpoints
    for et in EDGE_TYPES:
        ei, eid = sub.edge_index[et], sub.edge_id[et]
        if eid.numel():
            src, dst = g.adjacency(et).endpoints(eid)
            assert torch.equal(sub.node_idx[et[0]][ei[0]], src)
            assert torch.equal(sub.node_idx[et[2]][ei[1]], dst)
    # a high-degree node contributes at most `fanout` edges even though it has many more
    busiest = int(torch.argmax(g.nodes["app"].degree.view))
    one = sampler.sample({"app": torch.tensor([busiest], device=device)})
    uses = ("user", "uses", "app")
    assert g.adjacency(uses).in_degree(torch.tensor([busiest], device=device)).item() > 5 * fan[0]
    assert 0 < int((one.edge_index[uses][1] == 0).sum()) <= fan[0]


def test_sampler_sees_edges_appended_after_its_csr_was_built(device: torch.device) -> None:
    events = random_events(seed=8)
    g = random_graph(seed=8, device=device)
    sampler = NeighborSampler(g, [None])
    before = sampler.sample({"user": torch.tensor([0], device=device)})
    n_before = sum(int(v.shape[1]) for v in before.edge_index.values())
    # a new call and app usage of U0 (the CSR is not rebuilt: they live in the delta part)
    last = events[-1][0]
    from storage.events import Event

    g.apply_events([(last + 1, Event("x1", "call", 1.0, "U1", "U0", {"duration": 1.0})),
                    (last + 2, Event("x2", "app.usage", 1.0, "U0", "A2", {"duration": 1.0}))])
    after = sampler.sample({"user": torch.tensor([0], device=device)})
    assert sum(int(v.shape[1]) for v in after.edge_index.values()) == n_before + 2


def test_merging_per_type_samples_gives_the_joint_sample(device: torch.device) -> None:
    g = random_graph(seed=9, device=device)
    sampler = NeighborSampler(g, [None, None])
    seeds = {"user": torch.tensor([3, 4], device=device), "app": torch.tensor([0], device=device), "product": torch.tensor([2], device=device)}
    joint = sampler.sample(seeds)
    merged = merge_subgraphs([sampler.sample({t: s}) for t, s in seeds.items()])
    for t in NODE_TYPES:
        assert merged.node_idx[t][: merged.num_seeds[t]].tolist() == seeds[t].tolist()
        assert set(merged.node_idx[t].tolist()) == set(joint.node_idx[t].tolist())
    for et in EDGE_TYPES:
        assert set(merged.edge_id[et].tolist()) == set(joint.edge_id[et].tolist())
        glob_m = {(int(merged.node_idx[et[0]][a]), int(merged.node_idx[et[2]][b])) for a, b in merged.edge_index[et].t().tolist()}
        glob_j = {(int(joint.node_idx[et[0]][a]), int(joint.node_idx[et[2]][b])) for a, b in joint.edge_index[et].t().tolist()}
        assert glob_m == glob_j


def test_parse_fanouts() -> None:
    assert parse_fanouts("10,5") == [10, 5]
    assert parse_fanouts("all, 3") == [None, 3]
    for bad in ["", "0", "x,2", "-3"]:
        with pytest.raises(ValueError):
            parse_fanouts(bad)


@pytest.mark.parametrize("fanout", [None, 3])
@pytest.mark.parametrize("seed_types", [("user", "product", "app"), ("user",), ("app",)])
def test_seed_only_layer_equals_the_conv_on_the_seeds(fanout: int | None, seed_types: tuple[str, ...], device: torch.device) -> None:
    """The layer-wise refresh computes HGT layers for the seeds only (``HGTModel.seed_layer``); over a
    1-hop sample it must give exactly what ``HGTConv`` gives those seeds."""
    g = random_graph(seed=11, device=device, n_inter=2000)
    model = random_model(g, seed=12, layers=2)
    gen = torch.Generator().manual_seed(13)
    seeds = {t: v for t, v in _seeds(g, 9, gen).items() if t in seed_types}
    sub = NeighborSampler(g, [fanout], seed=0).sample(seeds)
    assert sub.num_edges() > 0
    with torch.no_grad():
        model.encoder.bind(g)
        h = model.hgt.inputs(model.encoder({t: g.raw_features(t, sub.node_idx[t]) for t in NODE_TYPES}))
        for i in range(2):
            full = conv_layer(model.hgt, i, h, sub.edge_index)
            only = model.hgt.seed_layer(i, h, sub.edge_index, sub.num_seeds)
            # the edges' distinct sources computed once for all layers (the refresh does): the same
            sources = {et: torch.unique(ei[0], return_inverse=True) for et, ei in sub.edge_index.items() if ei.shape[1]}
            given = model.hgt.seed_layer(i, h, sub.edge_index, sub.num_seeds, sources)
            for t in NODE_TYPES:
                n = sub.num_seeds[t]
                assert only[t].shape == (n, full[t].shape[1])
                torch.testing.assert_close(only[t], full[t][:n], atol=1e-5, rtol=0)
                assert torch.equal(given[t], only[t])
            h = {t: torch.randn_like(v) for t, v in h.items()}  # the next layer from other states
