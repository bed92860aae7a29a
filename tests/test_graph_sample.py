"""A user sample cut from the graph in memory equals the sampled graph read from the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from graph_fixtures import small_store
from scoring.graph import HeteroGraph
from scoring.graph_loader import build_graph
from scoring.graph_sample import sample_users
from scoring.graph_schema import FORWARD_EDGE_TYPES, NODE_TYPES
from storage.event_store import EventStore


def by_id(graph: HeteroGraph) -> dict[str, Any]:
    """Nodes (attributes and degree by id) and edges (as id pairs with seq and time), order aside."""
    out: dict[str, Any] = {}
    for t in NODE_TYPES:
        table, spec = graph.nodes[t], graph.space.specs[t]
        # categories and characters as values: each graph numbers its vocabularies as it meets them
        cats = [[None, *graph.space.vocabs[f"{t}.{c}"].to_list()] for c in spec.categorical]
        chars = [[None, *graph.space.vocabs[f"{t}.{c}#chars"].to_list()] for c in spec.sequence]
        rows = zip(table.ids, table.numeric.view.tolist(), table.categorical.view.tolist(),
                   table.sequence.view.tolist(), table.degree.view.tolist())
        out[t] = {i: (np.nan_to_num(num, nan=-1.0).tolist(), [v[k] for v, k in zip(cats, cat)],
                      [[v[k] for k in s] for v, s in zip(chars, seq)], deg) for i, num, cat, seq, deg in rows}
    for et in FORWARD_EDGE_TYPES:
        e, src, dst = graph.edges[et], graph.nodes[et[0]].ids, graph.nodes[et[2]].ids
        out[str(et)] = sorted(zip([src[i] for i in e.src.view.tolist()], [dst[i] for i in e.dst.view.tolist()],
                                  e.seq.view.tolist(), e.ts.view.tolist()))
    return out


@pytest.mark.parametrize("ratio", [0.3, 1.0])
def test_a_sample_of_the_full_graph_is_the_sampled_build(tmp_path: Path, ratio: float) -> None:
    db = tmp_path / "g.db"
    small_store(db)
    with EventStore(db) as store:
        full = build_graph(store)
        sampled = build_graph(store, sample_ratio=ratio, sample_seed=5)
    cut = sample_users(full, ratio, 5)
    assert 0 < cut.num_nodes("user") <= full.num_nodes("user")
    assert (cut.num_nodes("user") < full.num_nodes("user")) == (ratio < 1)
    assert by_id(cut) == by_id(sampled)
    assert cut.last_seq == sampled.last_seq and cut.num_edges() == sampled.num_edges()
