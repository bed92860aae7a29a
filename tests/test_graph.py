"""The heterogeneous graph built from the store, its incremental update and its features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from graph_fixtures import SMALL, device_setting, random_events, settings_for, small_store
from scoring.adjacency import rows_of
from scoring.features import CategoricalVocabulary, EncoderConfig, HeteroFeatureEncoder
from scoring.graph_schema import EDGE_TYPES, FORWARD_EDGE_TYPES, NODE_TYPES, RELATIONS, edge_key
from scoring.graph import HeteroGraph
from scoring.graph_loader import build_graph, graph_statistics
from storage.event_store import EventStore
from storage.events import Event


def test_graph_built_from_the_store_matches_the_store(tmp_path: Path, device: torch.device) -> None:
    db = tmp_path / "g.db"
    gen = small_store(db)
    with EventStore(db) as store:
        g = build_graph(store, device=device)
        by_type = store.counts_by_type()
        users = {r[0] for r in store.conn.execute("SELECT user_id FROM events WHERE user_id IS NOT NULL AND type != 'label.observed'")}
        users |= {r[0] for r in store.conn.execute("SELECT target_id FROM events WHERE type = 'call'")}
        assert g.last_seq == store.last_seq()
    assert g.num_nodes("user") == len(users) == SMALL.users
    assert g.num_nodes("product") == by_type["product.listed"] == SMALL.products
    assert g.num_nodes("app") == by_type["app.listed"] == SMALL.apps
    for etype, et in RELATIONS.items():
        assert g.num_edges(et) == by_type[etype]
        assert g.num_edges((et[2], f"rev_{et[1]}", et[0])) == by_type[etype]
    stats = graph_statistics(settings_for(db, device=device_setting(device)))
    assert stats["nodes"] == {t: g.num_nodes(t) for t in NODE_TYPES}
    assert stats["edges"] == {edge_key(et): g.num_edges(et) for et in FORWARD_EDGE_TYPES}
    # attributes come from the registration event; edge times from the events
    attrs = gen.pop.attributes(5)
    u5 = g.nodes["user"].index["U0000005"]
    assert g.nodes["user"].numeric.view[u5].tolist() == pytest.approx([attrs["monthly_fee"], attrs["tenure_months"]])
    plan_vocab = g.space.vocabs["user.plan_type"]
    assert plan_vocab.values[int(g.nodes["user"].categorical.view[u5, 0])] == attrs["plan_type"]
    with EventStore(db) as store:
        first_call = next(store.read(types=["call"]))
    calls = g.edges[RELATIONS["call"]]
    assert calls.ts.view[0].item() == first_call.ts and calls.seq.view[0].item() == first_call.seq
    assert g.nodes["user"].ids[int(calls.src.view[0])] == first_call.user_id
    assert g.nodes["user"].ids[int(calls.dst.view[0])] == first_call.target_id
    hd = g.to_hetero_data()
    assert set(hd.edge_types) == set(EDGE_TYPES) and hd["user"].num_nodes == SMALL.users


def test_graph_statistics_needs_a_database(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no database"):
        graph_statistics(settings_for(tmp_path / "none.db"))


def _same_graph(a: HeteroGraph, b: HeteroGraph) -> None:
    assert a.last_seq == b.last_seq
    for t in NODE_TYPES:
        ta, tb = a.nodes[t], b.nodes[t]
        assert ta.ids == tb.ids
        for name in ("numeric", "categorical", "sequence", "degree", "last_seq", "last_ts"):
            torch.testing.assert_close(getattr(ta, name).view, getattr(tb, name).view, equal_nan=True)
    for et in FORWARD_EDGE_TYPES:
        for name in ("src", "dst", "ts", "seq"):
            assert torch.equal(getattr(a.edges[et], name).view, getattr(b.edges[et], name).view)
    for k, v in a.space.vocabs.items():
        assert v.values == b.space.vocabs[k].values
    for et in EDGE_TYPES:  # the incremental CSR (base + delta) answers like a fresh one
        for t_nodes in [torch.arange(a.num_nodes(et[2]))]:
            ea = torch.sort(a.adjacency(et).incoming(t_nodes, None)).values
            eb = torch.sort(b.adjacency(et).incoming(t_nodes, None)).values
            assert torch.equal(ea, eb)
        # and its rows as scipy reads them (base and newest edges merged): each edge counted once, from its
        # source; nodes past the end have none
        adj = a.adjacency(et)
        got = rows_of(adj.host_parts(), np.arange(a.num_nodes(et[2]) + 2), a.num_nodes(et[0])).toarray()
        src, dst = (x.cpu().numpy() for x in adj.endpoints(torch.arange(a.num_edges(et), device=a.device)))
        want = np.zeros_like(got)
        np.add.at(want, (dst, src), 1)
        assert got.sum() == len(src) and (got == want).all()


def test_incremental_update_equals_a_rebuild(tmp_path: Path, device: torch.device) -> None:
    history = random_events(seed=11, n_inter=600)
    later = random_events(seed=12, n_users=140, n_inter=400, start_seq=history[-1][0] + 1)  # new users too
    # a partial update, a re-registration and an unknown plan type among the later events
    s = later[-1][0]
    later += [
        (s + 1, Event("u1", "user.updated", 2e9, "U3", None, {"plan_type": "新套餐", "monthly_fee": 99.0})),
        (s + 2, Event("u2", "call", 2e9, "U999", "U3", {"duration": 3.0})),
    ]
    full = HeteroGraph(device, compact_min=100)
    full.apply_events(history + later)

    inc = HeteroGraph(device, compact_min=100)  # small threshold: the CSR is both extended and compacted
    inc.apply_events(history)
    for e in inc.edges:  # build the CSRs before the update so the update has to extend them
        inc.adjacency(e).in_degree(torch.arange(3, device=device))
    for i in range(0, len(later), 37):
        delta = inc.apply_events(later[i : i + 37])
        assert delta.events == len(later[i : i + 37])
    inc.apply_events(later[:10])  # replayed events are skipped
    _same_graph(inc, full)
    u3 = inc.nodes["user"].index["U3"]
    assert inc.space.vocabs["user.plan_type"].values[int(inc.nodes["user"].categorical.view[u3, 0])] == "新套餐"
    assert inc.nodes["user"].numeric.view[u3, 0].item() == 99.0
    u999 = inc.nodes["user"].index["U999"]
    assert torch.isnan(inc.nodes["user"].numeric.view[u999]).all()  # never registered: attributes missing


def test_store_graph_updated_from_later_events_equals_a_rebuild(tmp_path: Path, device: torch.device) -> None:
    db = tmp_path / "g.db"
    small_store(db)
    with EventStore(db) as store:
        half = store.last_seq() // 2
        g = build_graph(store, device=device, upto_seq=half)
        assert g.last_seq == half
        g.apply_events(((e.seq, e) for e in store.read(half + 1)))
        _same_graph(g, build_graph(store, device=device))


def test_sample_ratio_keeps_a_deterministic_share_of_users(tmp_path: Path, device: torch.device) -> None:
    db = tmp_path / "g.db"
    small_store(db)
    with EventStore(db) as store:
        a = build_graph(store, device=device, sample_ratio=0.5, sample_seed=3)
        b = build_graph(store, device=device, sample_ratio=0.5, sample_seed=3)
        c = build_graph(store, device=device, sample_ratio=0.5, sample_seed=4)
        full = build_graph(store, device=device)
    assert a.nodes["user"].ids == b.nodes["user"].ids
    assert a.nodes["user"].ids != c.nodes["user"].ids
    assert 0.35 * SMALL.users < a.num_nodes("user") < 0.65 * SMALL.users
    assert a.num_nodes("app") == full.num_nodes("app")  # the catalogue is kept whole
    kept = set(a.nodes["user"].ids)
    calls = a.edges[RELATIONS["call"]]
    assert {a.nodes["user"].ids[int(i)] for i in torch.cat([calls.src.view, calls.dst.view])} <= kept
    assert a.num_edges() < full.num_edges()
    with pytest.raises(ValueError, match="sample_ratio"):
        HeteroGraph(sample_ratio=0)


def test_vocabulary_grows_and_unknown_values_fall_into_the_unknown_bucket() -> None:
    v = CategoricalVocabulary(["a", "b"])
    assert v.lookup("a") == 1 and v.lookup("zzz") == 0 and len(v) == 3
    assert v.add("c") == 3 and v.add("a") == 1 and v.values_from(3) == ["c"]
    # a model trained before a plan type existed encodes it like an unknown one
    g = HeteroGraph()
    g.apply_events(random_events(seed=13, n_inter=50))
    enc = HeteroFeatureEncoder(EncoderConfig.fit(g.space, {t: g.raw_features(t) for t in NODE_TYPES}, {t: g.nodes[t].ids for t in NODE_TYPES}))
    enc.eval()
    s = g.last_seq
    g.apply_events([
        (s + 1, Event("n1", "user.registered", 1.0, "NEW1", None, {"name": "n", "gender": "U", "age": 1, "city": "c", "plan_type": "火星套餐", "level": "普通", "device_brand": "华为", "monthly_fee": 10.0, "tenure_months": 1})),
        (s + 2, Event("n2", "user.registered", 1.0, "NEW2", None, {"name": "n", "gender": "U", "age": 1, "city": "c", "plan_type": "<unk>", "level": "普通", "device_brand": "华为", "monthly_fee": 10.0, "tenure_months": 1})),
    ])
    enc.bind(g)
    idx = torch.tensor([g.nodes["user"].index["NEW1"], g.nodes["user"].index["NEW2"]])
    with torch.no_grad():
        x = enc({"user": g.raw_features("user", idx)})["user"]
    torch.testing.assert_close(x[0], x[1])  # unknown plan, unknown id: same features
    assert enc._maps["user.plan_type"][-1].item() == 0 and enc._maps["user.__id__"][-1].item() == 0
    assert np.isfinite(x.numpy()).all()


def test_hidden_edges_leave_the_degree_features_as_if_they_were_removed(device: torch.device) -> None:
    """A training step hides its supervision edges from the message passing; the degree features must
    then equal those of the graph without them, for every node and for any node subset (or the
    degree gives the hidden edge away)."""
    from graph_fixtures import random_graph
    from scoring.evaluate import with_edges

    g = random_graph(seed=3, device=device)
    gen = torch.Generator().manual_seed(0)
    hidden, keep = {}, {}
    for et in FORWARD_EDGE_TYPES:
        e = g.edges[et]
        pick = (torch.rand(len(e), generator=gen) < 0.3).to(device)
        hidden[et] = (e.src.view[pick], e.dst.view[pick])
        keep[et] = torch.nonzero(~pick).flatten()
    without = with_edges(g, keep)
    for t in NODE_TYPES:
        assert torch.equal(g.raw_features(t, hidden=hidden).degrees, without.raw_features(t).degrees)
        idx = torch.randperm(g.num_nodes(t), generator=gen)[: g.num_nodes(t) // 2].to(device)  # unsorted subset
        assert torch.equal(g.raw_features(t, idx, hidden).degrees, without.raw_features(t, idx).degrees)
    assert not torch.equal(g.raw_features("user").degrees, without.raw_features("user").degrees)
