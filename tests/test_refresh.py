"""The priority-scheduled incremental embedding refresh, alone and as a Bytewax step."""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dataflow.generator import GeneratorConfig, MockGenerator
from graph_fixtures import SMALL, device_setting, random_model, settings_for, small_store
from scoring.embed import embed_all
from scoring.graph_schema import ATTRIBUTE_EVENTS, NODE_TYPES, RELATIONS
from scoring.graph_loader import build_graph
from scoring.model_io import register_model
from scoring.neighbourhood import NODE_TYPE as NEIGHBOURHOOD, neighbourhood_means
from scoring.service import ScoringService
from scoring_support import fold_profiles
from config.settings import Settings
from dataflow.refresh_step import RefreshControl, RefreshOutput, refresh_builder
from scoring.refresh import IncrementalRefresher
from scoring.refresh_config import RefreshConfig
from scoring.refresh_queue import PriorityQueue
from storage.event_store import EventStore
from storage.events import StoredEvent
from storage.embeddings import Embeddings
from test_graph import _same_graph


def _register_random(db: Path, seed: int) -> int:
    with EventStore(db) as store:
        g = build_graph(store)
        model = random_model(g, seed=seed)
        return register_model(store, model, {"note": "random"}, {"seed": 0, "sample_ratio": 1.0, "split": [0.8, 0.1, 0.1]}, {})


@pytest.fixture
def live_db(tmp_path: Path) -> Path:
    db = tmp_path / "r.db"
    small_store(db)
    _register_random(db, seed=1)
    embed_all(settings_for(db))
    return db


def _append_live(db: Path, n: int, chunk: int = 0) -> list[StoredEvent]:
    """Live events (new users included) appended to the log the way the dataflow does."""
    gen = MockGenerator(GeneratorConfig(**{**SMALL.__dict__, "new_user_share": 0.1}))
    events = gen.live_chunk(chunk, 1_767_300_000.0, 100.0)[:n]
    with EventStore(db) as store:
        res = store.append(events)
        first = res.new[0][0]
        return list(store.read(first, res.new[-1][0]))


def _affected(events: list[StoredEvent]) -> dict[tuple[str, str], int]:
    """(node type, id) -> newest seq among the events touching it."""
    out: dict[tuple[str, str], int] = {}
    for e in events:
        keys = []
        if e.type in RELATIONS:
            et = RELATIONS[e.type]
            keys = [(et[0], e.user_id), (et[2], e.target_id)]
        elif e.type in ATTRIBUTE_EVENTS:
            t = ATTRIBUTE_EVENTS[e.type]
            keys = [(t, e.user_id if t == "user" else e.target_id)]
        for k in keys:
            out[k] = max(out.get(k, 0), e.seq)
    return out


def _config(**kw: object) -> RefreshConfig:
    base: dict[str, object] = dict(fanouts="all,all", budget=5, full_share=0.9, weight_freshness=0.0, weight_degree=1.0,
                                   weight_change=0.0, weight_wait=0.0)
    base.update(kw)
    return RefreshConfig(**base)  # type: ignore[arg-type]


def _running(s: object, **kw: object) -> IncrementalRefresher:
    """A refresher as it is once running: stored embeddings loaded, layer cache warm."""
    r = IncrementalRefresher(s, config=_config(**kw))
    r.run_full_pass()
    return r


def _tick(r: IncrementalRefresher, **kw: object) -> list[tuple]:
    """A tick's graph embedding rows (the call-neighbourhood rows that follow them are tested apart)."""
    return [row for row in r.tick(**kw) if row[0] != NEIGHBOURHOOD]  # type: ignore[arg-type]


def _drain(r: IncrementalRefresher, **kw: object) -> list[tuple]:
    rows: list[tuple] = []
    while r.busy:
        rows += _tick(r, **kw)
        time.sleep(0.001)  # (a tight loop would keep a pass thread from the GIL)
    return rows


@pytest.mark.parametrize("mode", ["layerwise", "sampled"])
def test_events_refresh_exactly_the_affected_nodes_highest_priority_first(live_db: Path, mode: str, device: torch.device) -> None:
    s = settings_for(live_db, device=device_setting(device))
    r = _running(s, mode=mode)
    assert len(r.queue) == 0 and r.model_version == 1  # stored embeddings of version 1 were loaded
    events = _append_live(live_db, 40)
    expected = _affected(events)
    assert any(k[0] == "user" and k[1] not in r.graph.nodes["user"].index for k in expected)  # a new user
    r.observe(events)
    assert len(r.queue) == len(expected)
    assert r.status()["refresh_queue"] == len(expected)

    rows = []
    while len(r.queue):
        batch = _tick(r)
        assert 0 < len(batch) <= 5
        rows += batch
    assert _tick(r) == []
    keys = [(t, nid) for t, nid, *_ in rows]
    assert len(keys) == len(set(keys)) and set(keys) == set(expected)
    # priority = log(1 + degree) here: rows come out by non-increasing degree
    deg = [float(r.graph.nodes[t].degree.view[r.graph.nodes[t].index[nid]]) for t, nid in keys]
    assert all(a >= b for a, b in zip(deg, deg[1:])) and deg[0] > deg[-1]
    for t, nid, vec, version, seq in rows:
        assert version == 1 and seq == expected[(t, nid)] and vec.dtype == np.float32
    # with fan-out "all" a sampled refresh is exactly the full forward of the updated graph; a layer-wise
    # one takes its neighbours' inner states from the cache, which lag until they are refreshed too
    # (exact with a current cache: the next test)
    with torch.no_grad():
        full = r.model.embedder.embed_all(r.graph)
    for t, nid, vec, _, _ in rows:
        np.testing.assert_allclose(vec, full[t][r.graph.nodes[t].index[nid]].cpu().numpy(), atol=1e-5 if mode == "sampled" else 1e-2)
    # the rows are what Embeddings.put_many takes; untouched nodes keep their stored embedding
    with EventStore(live_db) as store:
        with store.transaction() as conn:
            Embeddings(conn).put_many(rows)
        t, nid, vec, _, seq = rows[0]
        got = Embeddings(store.conn).get(t, nid)
        assert got is not None and got.seq == seq and np.allclose(got.vector, vec)
    st = r.status()
    assert st["refresh_queue"] == 0 and st["refreshes_per_s"] > 0 and st["model_version"] == 1 and st["device"] == device.type
    r.close()


def test_layerwise_refresh_with_a_current_cache_equals_the_full_forward(live_db: Path, device: torch.device) -> None:
    r = _running(settings_for(live_db, device=device_setting(device)), mode="layerwise", fanouts="all")
    events = _append_live(live_db, 20)
    r.observe(events)
    r.run_full_pass()  # the cache is current for the updated graph (no rows: the nodes stay pending)
    assert len(r.queue) == len(_affected(events))
    rows = []
    while len(r.queue):
        rows += _tick(r)
    with torch.no_grad():
        full = r.model.embedder.embed_all(r.graph)
    assert {(t, nid) for t, nid, *_ in rows} == set(_affected(events))
    for t, nid, vec, _, _ in rows:
        np.testing.assert_allclose(vec, full[t][r.graph.nodes[t].index[nid]].cpu().numpy(), atol=1e-5)
    # the cost is one hop: with a 2-layer model the sampled L-hop subgraph is larger
    seeds = {"user": torch.arange(5, device=device)}
    from scoring.sampler import NeighborSampler

    assert r.sampler1.sample(seeds).num_nodes() < NeighborSampler(r.graph, [None, None]).sample(seeds).num_nodes()
    with pytest.raises(ValueError, match="refresh mode"):
        IncrementalRefresher(settings_for(live_db), config=_config(mode="bogus"))
    r.close()


def test_a_refresher_on_an_embedded_store_refreshes_layer_wise_without_a_warm_up_pass(
    live_db: Path, device: torch.device
) -> None:
    """`ups embed` keeps the inner layers' states beside the embeddings: a refresher started on the store
    has its layer cache warm at once (no full pass, minutes at a million users) and refreshes exactly as
    one that warmed it with a pass."""
    s = settings_for(live_db, device=device_setting(device))
    started = IncrementalRefresher(s, config=_config(mode="layerwise", fanouts="all"))
    assert started.caches.layers_ready and len(started.queue) == 0
    warmed = _running(s, mode="layerwise", fanouts="all")
    events = _append_live(live_db, 20)
    got = {}
    for r in (started, warmed):
        r.observe(events)
        got[r] = {(t, nid): vec for t, nid, vec, _, _ in _drain(r)}
    assert started.full_refreshes == 0 and set(got[started]) == set(_affected(events))
    for key, vec in got[started].items():
        np.testing.assert_allclose(vec, got[warmed][key], atol=1e-5)
    # without the states (a store embedded before they were kept) the cache is warmed by a pass, as before
    with EventStore(live_db) as store, store.transaction() as conn:
        conn.execute("DELETE FROM embeddings WHERE node_type LIKE '%.layer1'")
    assert not IncrementalRefresher(s, config=_config(mode="layerwise")).caches.layers_ready
    for r in (started, warmed):
        r.close()


def test_freshness_and_change_weights_order_the_queue() -> None:
    q = PriorityQueue()
    q.push(("user", 1), 0.5, 10, 0.0, 100.0)
    q.push(("user", 2), 2.0, 11, 0.0, 101.0)
    q.push(("user", 1), 3.0, 12, 0.0, 102.0)  # re-marked higher: moves up, keeps first mark time
    q.push(("user", 2), 1.0, 13, 0.0, 103.0)  # re-marked lower: keeps its priority, takes the newer seq
    assert len(q) == 2 and q.oldest_marked_at() == 100.0
    (k1, p1), (k2, p2) = q.pop(5)
    assert (k1, p1.priority, p1.seq, p1.marked_at) == (("user", 1), 3.0, 12, 100.0)
    assert (k2, p2.priority, p2.seq) == (("user", 2), 2.0, 13)
    assert q.pop(5) == [] and len(q) == 0


def test_fresh_events_outrank_old_ones(live_db: Path, device: torch.device) -> None:
    r = _running(settings_for(live_db, device=device_setting(device)), weight_freshness=1.0, weight_degree=0.0, freshness_tau_s=60)
    events = _append_live(live_db, 6)
    now = events[-1].ts
    # the first three events are an hour old by their event time, the last three are fresh
    old = [dataclasses.replace(e, ts=now - 3600) for e in events[:3]]
    r.observe(old + events[3:], now=now)
    fresh_nodes = set(_affected(events[3:]))
    assert set(_affected(events[:3])) - fresh_nodes  # some nodes are touched by old events only
    order = {(t, nid) for t, nid, *_ in _tick(r, now=now, budget=len(fresh_nodes))}
    assert order == fresh_nodes
    r.close()


def _forward_at(db: Path, r: IncrementalRefresher, upto_seq: int) -> dict[tuple[str, str], np.ndarray]:
    """(type, id) -> the serving model's embedding from one forward of the graph rebuilt up to ``upto_seq``."""
    with EventStore(db) as store:
        g = build_graph(store, upto_seq=upto_seq, device=r.device)
    with torch.no_grad():
        out = {t: v.cpu() for t, v in r.model.embedder.embed_all(g).items()}
    return {(t, nid): out[t][i].numpy() for t in NODE_TYPES for i, nid in enumerate(g.nodes[t].ids)}


def _last_rows(rows: list[tuple]) -> dict[tuple[str, str], tuple]:
    return {(t, nid): (vec, v, seq) for t, nid, vec, v, seq in rows}


@pytest.mark.parametrize("background", [False, True], ids=["steps_in_ticks", "background_thread"])
def test_new_model_version_takes_over_after_a_full_pass(live_db: Path, background: bool, device: torch.device) -> None:
    r = _running(settings_for(live_db, device=device_setting(device)), model_poll_s=0.0, pass_chunk_edges=1000, budget=1000, pass_background=background)
    passes = r.full_refreshes
    assert r.maybe_reload_model() is False
    v2 = _register_random(live_db, seed=2)
    assert r.maybe_reload_model() is True
    # the old model serves until every node has been embedded with the new one
    assert r.model_version == 1 and r.switching_to == v2
    assert r.status()["refresh_queue"] == r.graph.num_nodes()  # no stored embedding of v2 yet: all pending
    snap = r.graph.last_seq
    rows = _tick(r, budget_s=0.0)  # a budget of nothing: one step of the pass per tick (when in ticks)
    if not background:
        assert r.switching_to == v2 and 0 < r.status()["full_pass"] < 1
        steps = r._pass.total_steps  # (CUDA takes wider steps than the configured 1 000 edges: fewer of them)
        assert steps > 3
    events = _append_live(live_db, 20)  # live events while the pass runs (a thread may be done already)
    expected = _affected(events)
    r.observe(events)
    during = _tick(r, budget_s=0.0)
    live_rows = [row for row in during if (row[0], row[1]) in expected]
    assert {(t, nid) for t, nid, *_ in live_rows} == set(expected)  # refreshed at once
    assert all(seq == expected[(t, nid)] for t, nid, _, v, seq in live_rows)
    if not background:
        assert all(v == 1 for *_, v, _ in live_rows)  # by the old model: the pass is not done
    rows += during
    ticks = 2
    while r.busy:
        rows += _tick(r, budget_s=0.0)
        ticks += 1
        time.sleep(0.001)  # (a tight loop would keep the pass thread from the GIL)
    assert r.full_refreshes == passes + 1
    if not background:
        assert ticks >= steps  # one step per tick: spread over many ticks
    assert r.model_version == v2 and r.switching_to is None and r.status()["model_version"] == v2
    last = _last_rows(rows)
    # every node ends on the new model; the ones touched during the pass with their newest seq
    assert set(last) == {(t, nid) for t in NODE_TYPES for nid in r.graph.nodes[t].ids}
    assert {v for _, v, _ in last.values()} == {v2}
    assert all(last[k][2] == seq for k, seq in expected.items())
    # nodes untouched since the pass began: exactly one forward of the graph as it was then
    at_snap = _forward_at(live_db, r, snap)
    clean = [k for k in last if k not in expected]
    assert len(clean) > 200
    for k in clean:
        np.testing.assert_allclose(last[k][0], at_snap[k], atol=1e-5)
    assert sum(1 for t, nid, _, v, _ in rows if v == v2 and (t, nid) in clean) == len(clean)  # each written once
    r.close()


def test_after_a_switch_nodes_touched_during_the_pass_wait_behind_live_ones(live_db: Path, device: torch.device) -> None:
    """Nodes touched while the switching pass ran need the new model, but their events are reflected
    already (by the old one): they wait in the backfill, served after the live queue, and a live event
    moves one back to the live queue. A snapshot keeps the backfill."""
    s = settings_for(live_db, device=device_setting(device))
    r = _running(s, model_poll_s=0.0, pass_chunk_edges=1000, budget=1000, pass_background=False, weight_wait=1.0)
    v2 = _register_random(live_db, seed=2)
    assert r.maybe_reload_model() is True
    _tick(r, budget_s=0.0)
    events = _append_live(live_db, 20)
    during = _affected(events)
    r.observe(events)
    while r.switching_to is not None:
        _tick(r, budget_s=0.0)
    backfill = {(t, r.graph.nodes[t].ids[i]) for (t, i), _ in r.backfill.items()}
    assert r.model_version == v2 and backfill == set(during) and len(r.queue) == 0
    assert r.status()["refresh_backfill"] == len(during) and r.status()["refresh_queue"] == len(during)

    live = _append_live(live_db, 20, chunk=1)
    fresh = _affected(live)
    moved = set(fresh) & backfill
    assert moved  # (the small graph's few apps and products are touched by both batches)
    r.observe(live)
    assert {(t, r.graph.nodes[t].ids[i]) for (t, i), _ in r.backfill.items()} == backfill - moved
    restored = IncrementalRefresher.restore(s, r.snapshot(), config=r.config)
    assert {(t, restored.graph.nodes[t].ids[i]) for (t, i), _ in restored.backfill.items()} == backfill - moved
    restored.close()

    rows = _tick(r, budget_s=math.inf)
    keys = [(t, nid) for t, nid, *_ in rows]
    assert set(keys[: len(fresh)]) == set(fresh)  # live nodes first, then the backfill
    assert set(keys[len(fresh):]) == backfill - moved and len(r.backfill) == 0
    assert all(v == v2 for *_, v, _ in rows)
    assert all(seq == {**during, **fresh}[(t, nid)] for t, nid, _, _, seq in rows)
    r.close()


def test_close_ends_a_running_background_pass(live_db: Path, device: torch.device) -> None:
    """Closing the refresher mid-switch ends its pass thread (one left inside torch when the
    interpreter exits aborts the process: 'terminate called without an active exception')."""
    r = _running(settings_for(live_db, device=device_setting(device)), model_poll_s=0.0, pass_chunk_edges=200, budget=1000, pass_background=True)
    _register_random(live_db, seed=3)
    assert r.maybe_reload_model() is True
    p = r._pass
    assert p is not None and p._thread is not None and p._thread.is_alive()
    steps = p._steps

    def slow_steps():  # each step takes a while, as at 100k users
        for step in steps:
            time.sleep(0.3)
            yield step

    p._steps = slow_steps()
    thread = p._thread
    time.sleep(0.1)  # the thread is inside a step now
    r.close()
    assert not thread.is_alive()


def test_a_backlog_over_the_share_runs_a_full_pass_while_live_nodes_keep_coming(live_db: Path, device: torch.device) -> None:
    r = _running(settings_for(live_db, device=device_setting(device)), full_share=0.05, pass_chunk_edges=1000, budget=5, pass_background=False)
    passes = r.full_refreshes
    first = _append_live(live_db, 40, chunk=0)
    r.observe(first)
    assert len(r.queue) >= 0.05 * r.graph.num_nodes()
    snap = r.graph.last_seq
    rows = _tick(r, budget_s=0.0)  # starts the pass; the top 5 are refreshed directly meanwhile
    assert len(rows) == 5 and r.status()["full_pass"] is not None
    more = _append_live(live_db, 20, chunk=1)
    r.observe(more)
    while r.status()["full_pass"] is not None:
        rows += _tick(r, budget_s=0.0, budget=0)  # the pass alone (no direct refreshes) ...
    rows += _drain(r)  # ... then what it left: the nodes touched since it began
    # (what the pass left may be a backlog over the share again: then another pass takes it)
    assert r.full_refreshes >= passes + 1 and len(r.queue) == 0
    expected = _affected(first + more)
    last = _last_rows(rows)
    assert set(last) == set(expected)  # exactly the affected nodes, each ending on its newest event
    assert all(last[k][2] == seq for k, seq in expected.items())
    touched_twice = set(_affected(first)) & set(_affected(more))
    assert len(rows) <= len(expected) + len(touched_twice)  # nobody refreshed twice for the same change
    # the pass's rows (pending when it began, untouched since) are one forward of the graph at its start
    at_snap = _forward_at(live_db, r, snap)
    by_pass = [k for k in _affected(first) if k not in _affected(more) and k not in {(t, n) for t, n, *_ in rows[:5]}]
    assert by_pass
    for k in by_pass:
        np.testing.assert_allclose(last[k][0], at_snap[k], atol=1e-5)
    r.close()


def test_without_stored_embeddings_a_full_pass_embeds_every_node_once(tmp_path: Path, device: torch.device) -> None:
    db = tmp_path / "f.db"
    small_store(db)
    s = settings_for(db, device=device_setting(device))
    r0 = IncrementalRefresher(s)
    assert r0.status()["refresh"] == "off" and r0.tick() == [] and not r0.busy  # no model yet: nothing to do
    r0.close()
    _register_random(db, seed=3)
    r = IncrementalRefresher(s, config=_config(full_share=0.3))
    assert len(r.queue) == r.graph.num_nodes()
    rows = _drain(r)
    assert r.full_refreshes == 1
    keys = [(t, nid) for t, nid, *_ in rows]
    assert len(keys) == len(set(keys)) == r.graph.num_nodes()
    with torch.no_grad():
        full = {t: v.cpu() for t, v in r.model.embedder.embed_all(r.graph).items()}
    for t, nid, vec, _, seq in rows:
        i = r.graph.nodes[t].index[nid]
        np.testing.assert_allclose(vec, full[t][i].numpy(), atol=1e-5)
        assert seq == int(r.graph.nodes[t].last_seq.view[i])
    r.close()


def test_the_time_budget_sizes_the_batches_highest_priority_first(tmp_path: Path, device: torch.device) -> None:
    db = tmp_path / "b.db"
    small_store(db)
    _register_random(db, seed=4)
    # nothing stored: every node pending; no fallback to a full pass (a share above 1), no cache to warm
    r = IncrementalRefresher(settings_for(db, device=device_setting(device)), config=_config(full_share=2.0, mode="sampled", budget=200))
    n = len(r.queue)
    first = _tick(r, budget_s=math.inf)  # the node cap bounds it
    assert len(first) == 200
    tiny = _tick(r, budget_s=0.0)  # no time left: one smallest batch, so the queue still moves
    assert len(tiny) == IncrementalRefresher.MIN_BATCH
    rest = _tick(r, budget_s=math.inf, budget=10_000)
    assert len(first) + len(tiny) + len(rest) == n and len(r.queue) == 0
    deg = [float(r.graph.nodes[t].degree.view[r.graph.nodes[t].index[nid]]) for t, nid, *_ in first + tiny + rest]
    assert all(a >= b for a, b in zip(deg, deg[1:]))
    r.close()


def test_waiting_raises_a_nodes_standing_so_nothing_starves() -> None:
    def order(wait_weight: float) -> list[tuple[str, int]]:
        q = PriorityQueue(wait_weight)
        q.push(("user", 1), 1.0, 1, 0.0, 0.0)  # low priority, marked first
        q.push(("app", 2), 3.0, 2, 0.0, 0.5)  # high priority, half a second later
        q.push(("app", 3), 3.0, 3, 0.0, 5.0)  # high priority, five seconds later
        return [k for k, _ in q.pop(3)]

    assert order(0.0) == [("app", 2), ("app", 3), ("user", 1)]
    # one unit of priority per second: after 5 s the user has outwaited a 2-unit gap, not after 0.5 s
    assert order(1.0) == [("app", 2), ("user", 1), ("app", 3)]
    q = PriorityQueue(1.0)
    q.push(("user", 1), 1.0, 1, 0.0, 0.0)
    q.push(("user", 1), 2.5, 4, 0.0, 9.0)  # re-marked higher later: keeps its first mark time and credit
    q.push(("app", 3), 3.0, 3, 0.0, 1.0)
    assert q.oldest_marked_at() == 0.0
    (k, p), = q.pop(1)
    assert k == ("user", 1) and p.priority == 2.5 and p.seq == 4 and p.marked_at == 0.0
    assert q.oldest_marked_at() == 1.0


def test_pause_keeps_marking_and_resume_refreshes(live_db: Path, device: torch.device) -> None:
    r = _running(settings_for(live_db, device=device_setting(device)), budget=1000)
    r.pause()
    events = _append_live(live_db, 10)
    r.observe(events)
    assert _tick(r) == [] and r.status()["refresh"] == "paused" and len(r.queue) == len(_affected(events))
    r.resume()
    assert len(_tick(r)) == len(_affected(events)) and r.status()["refresh"] == "running"
    r.close()


def test_snapshot_pickles_and_restore_rebuilds_from_the_store(live_db: Path, device: torch.device) -> None:
    s = settings_for(live_db, device=device_setting(device))
    r = _running(s)
    first = _append_live(live_db, 15, chunk=0)
    r.observe(first)
    with EventStore(live_db) as store, store.transaction() as conn:
        Embeddings(conn).put_many(r.tick(budget=3))  # what the flow's sink does with a tick's rows
    snap = pickle.loads(pickle.dumps(r.snapshot()))
    pending = {(t, nid) for t, nid, *_ in snap.pending}
    assert len(pending) == len(r.queue) > 0 and snap.last_seq == first[-1].seq
    more = _append_live(live_db, 15, chunk=1)  # events after the snapshot, which a resumed flow replays
    r2 = IncrementalRefresher.restore(s, snap, config=_config())
    assert r2.graph.last_seq == snap.last_seq
    assert {(t, r2.graph.nodes[t].ids[i]) for (t, i), _ in r2.queue.items()} == pending
    r2.observe(first + more)  # the replay overlaps the snapshot: only the new events count
    r.observe(more)
    assert {(t, r.graph.nodes[t].ids[i]) for (t, i), _ in r.queue.items()} == {
        (t, r2.graph.nodes[t].ids[i]) for (t, i), _ in r2.queue.items()
    }
    _same_graph(r2.graph, r.graph)
    r.close()
    r2.close()


def test_refresh_runs_as_a_bytewax_stateful_step(live_db: Path, device: torch.device) -> None:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    s = settings_for(live_db, refresh_budget=8, device=device_setting(device))
    events = _append_live(live_db, 25)
    items: list[object] = [RefreshControl("pause"), *events, RefreshControl("resume")]
    flow = Dataflow("refresh_test")
    inp = op.input("in", flow, TestingSource(items))
    keyed = op.key_on("one_graph", inp, lambda _: "graph")
    out = op.stateful("embedding_refresh", keyed, refresh_builder(s, config=_config(budget=8)))
    got: list[tuple[str, RefreshOutput]] = []
    op.output("out", out, TestingSink(got))
    run_main(flow)
    rows = [row for _, o in got for row in o.rows if row[0] != NEIGHBOURHOOD]
    assert {(t, nid) for t, nid, *_ in rows} == set(_affected(events))
    statuses = [o.status for _, o in got if o.status]
    assert statuses[0]["refresh"] == "paused" and statuses[-1]["refresh_queue"] == 0
    with pytest.raises(ValueError, match="unknown refresh command"):
        refresh_builder(s)(None).on_item(RefreshControl("explode"))


def test_refresh_step_plugs_onto_the_flows_log_stream(live_db: Path, device: torch.device) -> None:
    """What the integrator wires: the flow's log batches in, rows to EmbeddingSink, pause and
    status through callables (here plain Python state standing in for the flow's FlowControl)."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSource, run_main

    from dataflow.refresh_step import EmbeddingSink
    from dataflow.sources import LogBatch

    s = settings_for(live_db, device=device_setting(device))
    events = _append_live(live_db, 30)
    batches = [LogBatch([e for e in events[i : i + 10]], [e.seq for e in events[i : i + 10]], events[min(i + 9, 29)].seq)
               for i in range(0, 30, 10)]
    statuses: list[dict] = []
    flow = Dataflow("refresh_plug")
    affected = op.input("affected", flow, TestingSource(batches))
    keyed = op.key_on("refresh_key", affected, lambda _: "graph")
    out = op.stateful("embedding_refresh", keyed, refresh_builder(
        s, paused=lambda: False, on_status=statuses.append, config=_config(budget=16)))
    op.output("embeddings", out, EmbeddingSink(live_db))
    run_main(flow)
    expected = _affected(events)
    with EventStore(live_db) as store:
        emb = Embeddings(store.conn)
        for (t, nid), seq in expected.items():
            row = emb.get(t, nid)
            assert row is not None and row.seq == seq and row.model_version == 1, (t, nid)
        untouched = emb.get("user", next(u for u in (f"U{i:07d}" for i in range(300)) if ("user", u) not in expected))
        assert untouched is not None and untouched.seq < events[0].seq


def _refresh_and_store(r: IncrementalRefresher, db: Path, events: list[StoredEvent]) -> list[tuple]:
    """Observe ``events``, tick until nothing is left, write every row (what the flow's sink does)."""
    r.observe(events)
    rows = []
    while r.busy:
        rows += r.tick()
    with EventStore(db) as store, store.transaction() as conn:
        Embeddings(conn).put_many(rows)
    return rows


def _stored_neighbourhoods(db: Path, r: IncrementalRefresher) -> tuple[np.ndarray, np.ndarray]:
    """(every user's stored neighbourhood row, ``neighbourhood_means`` over the stored user embeddings and
    the refresher's call graph), in the graph's user order."""
    users = r.graph.nodes["user"].ids
    with EventStore(db) as store:
        emb = Embeddings(store.conn)
        own, hood = emb.get_many("user", users), emb.get_many(NEIGHBOURHOOD, users)
    assert set(own) == set(hood) == set(users)  # new users included
    calls = r.graph.edges[RELATIONS["call"]]
    full = neighbourhood_means(calls.src.view.cpu().numpy(), calls.dst.view.cpu().numpy(), np.stack([own[u] for u in users]))
    return np.stack([hood[u] for u in users]), full


@pytest.mark.parametrize("mode", ["layerwise", "sampled"])
def test_refreshed_call_neighbourhoods_equal_a_full_recompute_over_the_same_embeddings(
    live_db: Path, mode: str, device: torch.device
) -> None:
    r = _running(settings_for(live_db, device=device_setting(device)), mode=mode, budget=50)
    events = _append_live(live_db, 12)
    assert any(e.type == "call" for e in events)
    with EventStore(live_db) as store:  # the rows the last full pass wrote
        old = Embeddings(store.conn).get_many(NEIGHBOURHOOD, r.graph.nodes["user"].ids)
    rows = _refresh_and_store(r, live_db, events)
    hoods = [row for row in rows if row[0] == NEIGHBOURHOOD]
    users = r.graph.nodes["user"]
    assert all(v == 1 and seq == int(users.last_seq.view[users.index[nid]]) for _, nid, _, v, seq in hoods)
    # incremental: the rows within two calls of a re-embedded user, not every user's
    assert 0 < len({nid for _, nid, *_ in hoods}) < r.graph.num_nodes("user")
    stored, full = _stored_neighbourhoods(live_db, r)
    np.testing.assert_allclose(stored, full, atol=1e-5)
    # the live events moved neighbourhoods by far more than that (without the refresh this would fail)
    assert sum(np.abs(vec - old[nid]).max() > 1e-3 for _, nid, vec, *_ in hoods if nid in old) > 10
    r.close()


def test_neighbourhood_rows_take_the_ticks_time_left_the_reembedded_users_first(live_db: Path, device: torch.device) -> None:
    r = _running(settings_for(live_db, device=device_setting(device)), budget=1000)
    r.hoods.FIRST_BATCH = r.hoods.MIN_BATCH = 8  # (this graph has a few hundred users)
    events = _append_live(live_db, 30)
    r.observe(events)
    rows = r.tick(budget_s=0.0)  # no time left after the embeddings: one small batch of neighbourhoods
    users = {nid for t, nid, *_ in rows if t == "user"}
    hoods = [nid for t, nid, *_ in rows if t == NEIGHBOURHOOD]
    assert len(users) > 8 and len(hoods) == 8 and set(hoods) <= users
    assert len(r.hoods) > 0 and r.busy and r.status()["refresh_neighbourhoods"] == len(r.hoods)
    snap = pickle.loads(pickle.dumps(r.snapshot()))  # what is pending survives a restore
    assert snap.neighbourhoods and snap.neighbourhood_sources
    r2 = IncrementalRefresher.restore(settings_for(live_db, device=device_setting(device)), snap, config=r.config)
    for got, want in zip(r2.hoods.pending(), (snap.neighbourhoods, snap.neighbourhood_sources)):
        assert {nid for nid, *_ in got} == {nid for nid, *_ in want}
    r2.close()
    r.tick(budget_s=math.inf)
    assert len(r.hoods) == 0 and not r.busy
    r.close()


def test_a_new_users_score_uses_the_neighbourhood_the_refresh_gives_them(live_db: Path, device: torch.device) -> None:
    r = _running(settings_for(live_db, device=device_setting(device)), budget=1000)
    events = _append_live(live_db, 40)
    new = sorted(nid for t, nid in _affected(events) if t == "user" and nid not in r.graph.nodes["user"].index)
    with EventStore(live_db) as store:
        fold_profiles(store)  # (what the flow's profile branch does)
    with ScoringService(Settings(db=live_db)) as svc:
        assert all(svc.score(u)["embedding_missing"] for u in new)
    _refresh_and_store(r, live_db, events)
    with ScoringService(Settings(db=live_db)) as svc:
        scored = [svc.score(u) for u in new]
    assert new and all(not s["embedding_missing"] and s["model_version"] == 1 for s in scored)
    r.close()


def test_a_stop_leaves_the_queue_to_the_snapshot_and_the_next_start_refreshes_it(live_db: Path, device: torch.device) -> None:
    """At EOF the step works the queue for at most ``stop_drain_s`` (here none at all): the pending nodes
    go into the snapshot, and the step restored from it refreshes exactly them."""
    from dataflow.refresh_step import RefreshLogic
    from dataflow.sources import LogBatch

    s = settings_for(live_db, device=device_setting(device))
    events = _append_live(live_db, 30)
    logic = RefreshLogic(_running(s, budget=1000, stop_drain_s=0.0))
    logic.on_item(LogBatch(list(events), [e.seq for e in events], events[-1].seq))
    out, _ = logic.on_eof()
    assert not any(o.rows for o in out)
    expected = _affected(events)
    status = next(o.status for o in out if o.status)
    assert status["refresh_queue"] == len(expected)
    snap = pickle.loads(pickle.dumps(logic.snapshot()))
    assert {(t, nid) for t, nid, *_ in snap.pending} == set(expected)
    logic.refresher.close()

    again = refresh_builder(s, config=_config(budget=1000, stop_drain_s=60.0))(snap)
    rows = [row for o in again.on_eof()[0] for row in o.rows if row[0] != NEIGHBOURHOOD]
    assert {(t, nid): seq for t, nid, _, _, seq in rows} == expected
    assert not again.refresher.busy
    again.refresher.close()
    # without the snapshot (recovery state lost) the store still shows them stale: a fresh refresher marks them
    fresh = IncrementalRefresher(s, config=_config())
    assert {(t, fresh.graph.nodes[t].ids[i]) for (t, i), _ in fresh.queue.items()} == set(expected)
    fresh.close()


def test_the_refresh_in_its_own_process_reads_the_handed_on_log_and_writes_its_rows(live_db: Path, device: torch.device) -> None:
    """The flow's step only says how far the log is handed on; the child process reads those events from
    the store, refreshes the nodes they touched and writes their rows; a snapshot is the refresher's with
    every handed-on event observed, and a step restored from it carries on from there."""
    from dataflow.refresh_process import ProcessRefreshLogic
    from dataflow.sources import LogBatch

    s = settings_for(live_db, device=device_setting(device))
    events = _append_live(live_db, 30)
    statuses: list[dict] = []
    logic = ProcessRefreshLogic(s, None, on_status=statuses.append, config=_config(budget=1000, tick_s=0.05))
    assert logic.proc.pid != os.getpid()
    assert logic.snapshot() is None  # while the child starts: the snapshot it started from
    logic.on_item(LogBatch([], [], events[-1].seq))  # (the child reads the events themselves from the store)
    expected = _affected(events)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (statuses and statuses[-1]["refresh_queue"] == 0):
        logic.on_notify()
        time.sleep(0.05)
    snap = logic.snapshot()  # asked of the child; the step does not wait for it
    while time.monotonic() < deadline and snap is None:
        logic.on_notify()
        time.sleep(0.05)
        snap = logic.snapshot()
    assert snap is not None and snap.last_seq == events[-1].seq and not snap.pending
    # it runs below the flow and the API, which take the cores first when they are short
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, logic.proc.pid) == min(19, mine + s.refresh_nice) > mine
    logic.on_eof()
    assert logic.proc.returncode == 0 and statuses[-1]["refresh_queue"] == 0
    with EventStore(live_db) as store:
        emb = Embeddings(store.conn)
        for (t, nid), seq in expected.items():
            row = emb.get(t, nid)
            assert row is not None and row.seq == seq, (t, nid)
    assert not logic.snapshot().pending  # (the child's last snapshot, taken as it stopped)
    with pytest.raises(ValueError, match="unknown refresh command"):
        logic.on_item(RefreshControl("explode"))


def test_a_refresher_process_that_fails_fails_the_flows_step_with_its_error(live_db: Path) -> None:
    from dataflow.refresh_process import ProcessRefreshLogic, RefreshProcessError

    s = settings_for(live_db)
    logic = ProcessRefreshLogic(s, None, config=_config(mode="bogus"))
    with pytest.raises(RefreshProcessError, match="refresh mode must be layerwise or sampled"):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            logic.on_notify()
            time.sleep(0.1)


def test_the_step_takes_events_while_its_refresher_is_being_built(live_db: Path, device: torch.device) -> None:
    """Building the refresher (at 1M users the graph, stored embeddings and layer states: most of a
    minute) does not hold the flow up: events and controls wait until it is ready and then apply in
    order; a snapshot taken meanwhile resumes with every node those events touched pending."""
    from concurrent.futures import Future

    from bytewax.operators import StatefulLogic

    from dataflow.refresh_step import RefreshLogic
    from dataflow.sources import LogBatch

    s = settings_for(live_db, device=device_setting(device))
    before = _running(s)
    resumed_from = pickle.loads(pickle.dumps(before.snapshot()))
    before.close()
    events = _append_live(live_db, 20)
    expected = set(_affected(events))
    building: Future[IncrementalRefresher] = Future()
    logic = RefreshLogic(building, resumed=resumed_from)
    assert logic.on_item(RefreshControl("pause")) == ([], StatefulLogic.RETAIN)
    assert logic.on_item(LogBatch(events, [e.seq for e in events], events[-1].seq)) == ([], StatefulLogic.RETAIN)
    assert logic.on_notify()[0] == []
    with pytest.raises(ValueError, match="unknown refresh command"):
        logic.on_item(RefreshControl("explode"))

    snap = pickle.loads(pickle.dumps(logic.snapshot()))
    assert snap.last_seq == events[-1].seq and snap.paused
    resumed = IncrementalRefresher.restore(s, snap, config=_config())
    assert {(t, resumed.graph.nodes[t].ids[i]) for (t, i), _ in resumed.queue.items()} == expected
    resumed.close()

    building.set_result(IncrementalRefresher.restore(s, resumed_from, config=_config(budget=1000)))
    out, _ = logic.on_notify()  # the pause's status, then the tick's
    assert [o.status["refresh"] for o in out if o.status] == ["paused", "paused"]
    assert all(o.rows == [] for o in out) and out[-1].status is not None
    assert out[-1].status["refresh_queue"] == len(expected)
    logic.on_item(RefreshControl("resume"))
    out, _ = logic.on_notify()
    assert {(t, nid) for t, nid, *_ in out[-1].rows if t != NEIGHBOURHOOD} == expected
    logic.refresher.close()


def test_a_refresher_warmed_before_the_events_refreshes_what_a_cold_one_does(live_db: Path, device: torch.device) -> None:
    """Its indexes built before the events arrive (as the flow's step builds it), the new edges sit in
    the indexes' newest part: the refreshed rows are the same."""
    s = settings_for(live_db, device=device_setting(device))
    warm, cold = _running(s, budget=1000), _running(s, budget=1000)
    warm.warm()
    events = _append_live(live_db, 30)
    for r in (warm, cold):
        r.observe(events)
    got_warm, got_cold = _drain(warm), _drain(cold)
    assert {(t, nid) for t, nid, *_ in got_warm} == set(_affected(events))
    for a, b in zip(sorted(got_warm, key=lambda row: row[:2]), sorted(got_cold, key=lambda row: row[:2])):
        assert a[:2] == b[:2]
        np.testing.assert_allclose(np.frombuffer(a[2], np.float32), np.frombuffer(b[2], np.float32), atol=1e-5)
    warm.close()
    cold.close()


def test_the_flow_attaches_its_refresh_step_without_importing_the_model_stack() -> None:
    """torch and the refresher are imported on the refresher's build thread, not by the flow's worker
    while the flow is built (~5 s of the worker's time at start on a loaded machine)."""
    import subprocess
    import sys

    probe = "import sys, dataflow.refresh_step; print(sorted(m for m in ('torch', 'scoring.refresh') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
