"""The graph built in bulk from the store's columns: the same graph as a plain per-event reading of
the log, and as the live path's incremental update."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dataflow.bootstrap import append_dataset
from dataflow.generator import GeneratorConfig, MockGenerator
from scoring.graph_schema import ATTRIBUTE_EVENTS, FORWARD_EDGE_TYPES, GRAPH_EVENT_TYPES, NODE_TYPES, RELATIONS
from scoring.graph import HeteroGraph
from scoring.graph_loader import build_graph
from storage.event_store import EventStore
from storage.events import Event
from test_graph import _same_graph


@pytest.fixture(scope="module")
def default_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default mock dataset (``ups generate`` without options)."""
    db = tmp_path_factory.mktemp("default") / "ups.db"
    with EventStore(db) as store:
        append_dataset(store, MockGenerator(GeneratorConfig()), 20_000)
    return db


def _per_event_reading(store: EventStore) -> dict[str, Any]:
    """The graph spelled out one event at a time: nodes in order of first appearance (subject, then
    target), one edge per interaction, the last registration's attributes, per-node counts and seqs."""
    ids: dict[str, dict[str, int]] = {t: {} for t in NODE_TYPES}
    edges: dict[Any, list[tuple[int, int, float, int]]] = {et: [] for et in FORWARD_EDGE_TYPES}
    attrs: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in NODE_TYPES}
    degree: dict[tuple[str, int], int] = {}
    last: dict[tuple[str, int], int] = {}

    def node(t: str, nid: str, seq: int) -> int:
        i = ids[t].setdefault(nid, len(ids[t]))
        last[(t, i)] = seq
        return i

    for e in store.read(types=list(GRAPH_EVENT_TYPES)):
        if e.type in ATTRIBUTE_EVENTS:
            t = ATTRIBUTE_EVENTS[e.type]
            nid = e.target_id if t != "user" else e.user_id
            node(t, nid, e.seq)
            attrs[t][nid] = e.payload
            continue
        et = RELATIONS[e.type]
        s = node("user", e.user_id, e.seq)
        d = node(et[2], e.target_id, e.seq)
        edges[et].append((s, d, e.ts, e.seq))
        degree[("user", s)] = degree.get(("user", s), 0) + 1
        degree[(et[2], d)] = degree.get((et[2], d), 0) + 1
    return {"ids": ids, "edges": edges, "attrs": attrs, "degree": degree, "last": last}


def test_bulk_build_equals_a_per_event_reading_of_the_default_dataset(default_store: Path) -> None:
    with EventStore(default_store, readonly=True) as store:
        g = build_graph(store, device="cpu")
        ref = _per_event_reading(store)
        assert g.last_seq == store.last_seq()
    for t in NODE_TYPES:
        table = g.nodes[t]
        assert table.ids == list(ref["ids"][t])
        deg = np.zeros(len(table), np.float32)
        seq = np.zeros(len(table), np.int64)
        for (nt, i), d in ref["degree"].items():
            if nt == t:
                deg[i] = d
        for (nt, i), s in ref["last"].items():
            if nt == t:
                seq[i] = s
        assert np.array_equal(table.degree.view.numpy(), deg)
        assert np.array_equal(table.last_seq.view.numpy(), seq)
        spec = g.space.specs[t]
        for nid, payload in list(ref["attrs"][t].items())[:: max(1, len(ref["attrs"][t]) // 200)]:
            i = table.index[nid]
            for j, c in enumerate(spec.numeric):
                assert table.numeric.view[i, j].item() == pytest.approx(payload[c], rel=1e-6)
            for j, c in enumerate(spec.categorical):
                vocab = g.space.vocabs[f"{t}.{c}"]
                assert vocab.values[int(table.categorical.view[i, j])] == str(payload[c])
    for et in FORWARD_EDGE_TYPES:
        want = np.asarray(ref["edges"][et], dtype=np.float64).reshape(-1, 4)
        e = g.edges[et]
        assert np.array_equal(e.src.view.numpy(), want[:, 0].astype(np.int64))
        assert np.array_equal(e.dst.view.numpy(), want[:, 1].astype(np.int64))
        assert np.array_equal(e.ts.view.numpy(), want[:, 2])
        assert np.array_equal(e.seq.view.numpy(), want[:, 3].astype(np.int64))


def test_bulk_build_equals_the_live_update_event_by_event_batches(default_store: Path) -> None:
    with EventStore(default_store, readonly=True) as store:
        bulk = build_graph(store, device="cpu")
        small_chunks = build_graph(store, device="cpu", chunk=997)
        live = HeteroGraph("cpu")
        events = [(e.seq, e) for e in store.read()]
    for i in range(0, len(events), 5_000):
        live.apply_events(events[i : i + 5_000])
    _same_graph(bulk, live)
    _same_graph(small_chunks, live)


def test_bulk_build_of_a_sample_equals_the_live_update(default_store: Path) -> None:
    with EventStore(default_store, readonly=True) as store:
        bulk = build_graph(store, sample_ratio=0.3, sample_seed=5)
        live = HeteroGraph("cpu", sample_ratio=0.3, sample_seed=5)
        live.apply_events((e.seq, e) for e in store.read())
    assert 0.2 < bulk.num_nodes("user") / 2000 < 0.4
    _same_graph(bulk, live)


def test_columns_read_what_was_written_whatever_the_values(tmp_path: Path) -> None:
    """Times with more bits than the fast path carries, ids holding the separator, events without a
    user or target, other event types between them, chunk edges anywhere."""
    events = [
        Event("a", "product.listed", 0.1, None, "P\x1f1", {"name": "p", "category": "c", "price": 1.0}),
        Event("b", "user.registered", 1_764_630_000.123456, "U1", None, {"plan_type": "4G"}),
        Event("c", "label.observed", 3.0, "U1", None, {"label": 1}),
        Event("d", "product.order", 1_764_630_001.5, "U1", "P\x1f1", {"amount": 2.0}),
        Event("e", "call", 2e9 + 0.25, "U1", "U2", {"duration": 1.0}),
    ]
    db = tmp_path / "c.db"
    with EventStore(db) as store:
        store.append(events)
        store.append([Event(f"x{i}", "app.usage", 1_764_640_000.0 + i / 8, f"U{i % 3}", "A1", {}) for i in range(40)])
        for chunk in (1, 3, 7, 1000):
            got = list(store.read_columns(1, None, GRAPH_EVENT_TYPES, ["user.registered", "product.listed"], chunk))
            assert got[-1].upto == store.last_seq()
            want = [e for e in store.read() if e.type in GRAPH_EVENT_TYPES]
            seq = np.concatenate([b.seq for b in got])
            assert seq.tolist() == [e.seq for e in want]
            assert np.concatenate([b.type for b in got]).tolist() == [e.type for e in want]
            assert np.concatenate([b.user for b in got]).tolist() == [e.user_id for e in want]
            assert np.concatenate([b.target for b in got]).tolist() == [e.target_id for e in want]
            assert np.concatenate([b.ts for b in got]).tolist() == [e.ts for e in want]
            payloads = np.concatenate([b.payload for b in got]).tolist()
            assert [p is not None for p in payloads] == [e.type in ("user.registered", "product.listed") for e in want]
            assert [json.loads(p) for p in payloads if p is not None] == [
                e.payload for e in want if e.type in ("user.registered", "product.listed")
            ]
        window = list(store.read_columns(4, 10, ["app.usage"], (), 100))
        assert [int(s) for b in window for s in b.seq] == list(range(6, 11))


def test_build_graph_moves_its_tensors_to_the_device(default_store: Path, device: torch.device) -> None:
    with EventStore(default_store, readonly=True) as store:
        g = build_graph(store, device=device)
        cpu = build_graph(store, device="cpu")
    assert g.edges[RELATIONS["call"]].src.view.device.type == device.type
    assert g.nodes["user"].degree.view.device.type == device.type
    assert torch.equal(g.edges[RELATIONS["call"]].dst.view.cpu(), cpu.edges[RELATIONS["call"]].dst.view)


def test_the_graph_is_the_same_from_the_log_rows_the_graph_columns_or_both(tmp_path: Path) -> None:
    """A store of before the graph columns (none), the same store once they are caught up (in chunks),
    and a build that stops inside a block: each equals the live update of the same events."""
    db = tmp_path / "ups.db"
    with EventStore(db) as store:
        append_dataset(store, MockGenerator(GeneratorConfig(users=300, events_per_user=12)), 1_000)
        events = [(e.seq, e) for e in store.read()]
        store.graph_columns.clear()
        assert store.graph_columns.read().upto == 0
        from_rows = build_graph(store)
        assert store.graph_columns.catch_up(chunk=777) == store.last_seq()
        from_columns = build_graph(store)
        half = events[len(events) // 2][0] + 3
        part = build_graph(store, upto_seq=half)
    live = HeteroGraph("cpu")
    live.apply_events(events)
    _same_graph(from_rows, live)
    _same_graph(from_columns, live)
    live_part = HeteroGraph("cpu")
    live_part.apply_events(p for p in events if p[0] <= half)
    live_part.last_seq = half
    _same_graph(part, live_part)
