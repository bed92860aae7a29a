"""One ``HGTConv`` layer computed from the conv's own parameters, in three steps that callers combine:

* :func:`project`: the per-type key/query/value projections (``kqv_lin``) of every node given, and each
  edge type's relation transforms (``k_rel``, ``v_rel``) of its sources' keys and values: once per layer;
* :func:`attend`: the attention-weighted sum of the values over the incoming edges of a set of
  destination nodes (softmax per destination, as ``HGTConv`` does);
* :func:`finish`: the destination's output (``out_lin`` of the GELU, the gated skip, the layer norm).

Why not ``HGTConv`` itself: it applies each edge type's key/value transform once per edge type to the
sources, concatenated, through a per-type loop (``HeteroLinear`` without pyg-lib), and a caller that
bounds memory by running destination chunks must then project the chunk's neighbours again in every
chunk they appear in. Here the projections are made once per layer and each chunk only gathers rows;
``tests/test_sampler.py`` pins the result to ``HGTConv``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .graph_schema import EdgeType


@dataclass
class Projections:
    """A layer's projections: queries per node type, relation-transformed keys and values per edge type
    (rows: the edge type's sources as given to :func:`project`), each ``[n, heads, head dim]``."""

    q: dict[str, Tensor]
    k: dict[EdgeType, Tensor]
    v: dict[EdgeType, Tensor]


def _rel(lin: Any, x: Tensor, rows: Tensor | None, types: Tensor, heads: int, d: int) -> Tensor:
    """The relation's per-head matrices (``HeteroLinear`` types ``head * n_types + edge type``) applied
    to ``x[rows]`` as one batched product: [n, H*D] -> [n, H, D]."""
    x = x if rows is None else x[rows]
    n = x.shape[0]
    out = torch.bmm(x.view(n, heads, d).transpose(0, 1), lin.weight[types])
    if lin.bias is not None:
        out = out + lin.bias[types].unsqueeze(1)
    return out.transpose(0, 1)


def kqv(conv: Any, h: Mapping[str, Tensor]) -> dict[str, tuple[Tensor, ...]]:
    """(keys, queries, values) per node type, each [N, H*D]: the layer's one per-node projection."""
    out = conv.kqv_lin({t: v for t, v in h.items() if v.shape[0]})
    return {t: torch.tensor_split(v, 3, dim=1) for t, v in out.items()}


def project(
    conv: Any, split: Mapping[str, tuple[Tensor, ...]], edge_types: Iterable[EdgeType],
    sources: Mapping[EdgeType, Tensor] | None = None,
) -> Projections:
    """Queries of every node type in ``split`` (from :func:`kqv`) and the keys and values of each of
    ``edge_types`` for its sources: the rows ``sources[et]`` of the source type (all of them without)."""
    heads = conv.heads
    d = conv.out_channels // heads
    n_types = len(conv.edge_types)
    q = {t: s[1].reshape(-1, heads, d) for t, s in split.items()}
    k: dict[EdgeType, Tensor] = {}
    v: dict[EdgeType, Tensor] = {}
    for et in edge_types:
        if et[0] not in split:
            continue
        rows = sources.get(et) if sources is not None else None
        some = split[et[0]][0]
        types = torch.arange(heads, device=some.device) * n_types + conv.edge_types_map[et]
        k[et] = _rel(conv.k_rel, split[et[0]][0], rows, types, heads, d)
        v[et] = _rel(conv.v_rel, split[et[0]][2], rows, types, heads, d)
    return Projections(q, k, v)


def attend(
    conv: Any, proj: Projections, edges: Mapping[EdgeType, tuple[Tensor, Tensor, Tensor]], n_out: int,
) -> Tensor:
    """[n_out, H*D]: per output row, the softmax-weighted sum of the values of its incoming edges. ``edges``:
    edge type -> (key/value rows into ``proj.k[et]``, query rows into ``proj.q[dst type]``, output rows)."""
    from torch_geometric.utils import softmax

    heads = conv.heads
    d = conv.out_channels // heads
    alphas: list[Tensor] = []
    values: list[Tensor] = []
    outs: list[Tensor] = []
    for et, (kv_rows, q_rows, out_rows) in edges.items():
        if kv_rows.numel() == 0 or et not in proj.k:
            continue
        k = proj.k[et][kv_rows]
        alphas.append((proj.q[et[2]][q_rows] * k).sum(-1) * conv.p_rel["__".join(et)])
        values.append(proj.v[et][kv_rows])
        outs.append(out_rows)
    some = next(iter(proj.q.values()))
    agg = torch.zeros((n_out, conv.out_channels), dtype=some.dtype, device=some.device)
    if outs:
        dst = torch.cat(outs)
        alpha = softmax(torch.cat(alphas) / d**0.5, dst, num_nodes=n_out)
        agg.index_add_(0, dst, (torch.cat(values) * alpha.unsqueeze(-1)).reshape(-1, conv.out_channels))
    return agg


def finish(conv: Any, norm: nn.Module, node_type: str, x: Tensor, agg: Tensor) -> Tensor:
    """The layer's output for destination nodes of ``node_type`` with inputs ``x`` and aggregates ``agg``."""
    if node_type not in conv.dst_node_types:
        return norm(x)
    a = conv.out_lin({node_type: F.gelu(agg)})[node_type]
    if a.size(-1) == x.size(-1):
        g = conv.skip[node_type].sigmoid()
        a = g * a + (1 - g) * x
    return norm(a)


__all__ = ["Projections", "attend", "finish", "kqv", "project"]
