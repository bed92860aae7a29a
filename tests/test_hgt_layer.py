"""``HGTModel.layer`` computes ``HGTConv``'s layer from the conv's own parameters (per-relation transforms
as batched products, the projections once per layer): it must give what ``HGTConv`` gives, outputs
and gradients, on a whole graph, on a subgraph missing some edge types, and chunked."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from graph_fixtures import random_graph, random_model
from scoring.graph_schema import EDGE_TYPES, NODE_TYPES, EdgeType
from scoring.incoming import IncomingEdges
from scoring.model import HGTModel


def conv_layer(hgt: HGTModel, i: int, h: Mapping[str, Tensor], edge_index: Mapping[EdgeType, Tensor]) -> dict[str, Tensor]:
    """The layer as ``HGTConv`` itself computes it, then the norm (what ``layer`` was before)."""
    out = hgt.convs[i](dict(h), dict(edge_index))
    return {t: hgt.norms[i][t](out[t] if out.get(t) is not None else h[t]) for t in h}


def test_the_layer_gives_hgtconvs_outputs_and_gradients(device: torch.device) -> None:
    g = random_graph(seed=21, device=device, n_inter=3000)
    model = random_model(g, seed=22, layers=2).eval()
    model.encoder.bind(g)
    x = model.encoder({t: g.raw_features(t) for t in NODE_TYPES})
    full = g.edge_index_dict()
    some = {et: ei for et, ei in full.items() if et[1] not in ("calls", "rev_orders")}  # types without edges
    for edges in (full, some):
        for i in range(2):
            ours = model.hgt.layer(i, model.hgt.inputs(x), edges)
            ref = conv_layer(model.hgt, i, model.hgt.inputs(x), edges)
            for t in NODE_TYPES:
                torch.testing.assert_close(ours[t], ref[t], atol=1e-5, rtol=1e-5)
            grads = []
            for out in (ours, ref):
                model.zero_grad()
                sum((v * v).sum() for v in out.values()).backward(retain_graph=True)  # type: ignore[union-attr]
                grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
            assert grads[0].keys() == grads[1].keys() and grads[0]
            for n in grads[0]:
                torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-4, rtol=1e-4)


def test_the_chunked_full_layer_equals_the_layer(device: torch.device) -> None:
    g = random_graph(seed=23, device=device, n_inter=2000)
    model = random_model(g, seed=24, layers=2).eval()
    incoming = IncomingEdges(g)
    with torch.no_grad():
        model.encoder.bind(g)
        h = model.hgt.inputs(model.encoder({t: g.raw_features(t) for t in NODE_TYPES}))
        whole = model.hgt.layer(0, h, g.edge_index_dict())
        for budget in (50, 10**9):  # many ranges per type, and one
            chunked = model.hgt.full_layer(0, h, incoming, budget)
            for t in NODE_TYPES:
                torch.testing.assert_close(chunked[t], whole[t], atol=1e-5, rtol=0)
    assert len(incoming.ranges("user", 50)) > 5
    assert sum(len(incoming.into(t)) for t in NODE_TYPES) == len(EDGE_TYPES)
