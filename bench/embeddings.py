"""Graph-embedding benchmark.

* full forward (HGT, default shape) time and peak extra memory at 10k / 100k / 1M users, against a
  bare baseline measured in the same run: one sum-aggregation of hidden-size vectors over every edge;
* training time per step and epoch at 100k users in each mode (full batch, which ``auto`` picks there,
  sampled mini-batches, METIS partitions), and a bounded sample at 1M users (a few mini-batch and
  METIS steps, the epoch extrapolated, the partitioning timed, peak memory);
* incremental refresh under a simulated live stream (default 5 000 events/s) at 100k users: nodes
  refreshed per second and event -> embedding latency p50 / p99 (rows written to SQLite each tick as
  the flow's sink does), with a new model version arriving mid-stream; run twice, with unbounded ticks
  (the baseline: a full pass inside one tick, as before the time budget) and with the tick time budget;
  and the cost of refreshing the nodes touched by one event against one full forward (target: >= 100x
  cheaper; p99 <= 2 s).

Graphs are built from the mock generator's arrays through the same ``HeteroGraph.apply`` path a
store build uses (skipping SQLite, which ``bench.store`` measures). The model is freshly initialised:
speed does not depend on the weights.

    python -m bench.embeddings [--sizes 10000,100000,1000000] [--stream-seconds 20] [--rate 5000]
                               [--skip forward,train,refresh] [--train-sample-users 1000000]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import psutil
import torch

from dataflow.generator import BRANDS, LEVELS, PLANS, GeneratorConfig, MockGenerator, app_id, product_id, user_id
from scoring.neighbourhood import NODE_TYPE as NEIGHBOURHOOD
from scoring.refresh_config import RefreshConfig
from scoring.features import EncoderConfig
from scoring.graph_schema import NODE_TYPES
from storage.columns import EventBatch
from scoring.graph import HeteroGraph
from scoring.model import GraphEmbedder
from scoring.model_io import LoadedModel
from config.device import resolve_device
from config.settings import Settings

_TYPES = ["call", "product.click", "product.order", "app.usage", "app.click"]


class PeakRSS:
    """Peak resident memory of this process while the block runs, sampled every 10 ms."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self.start = 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = self.proc.memory_info().rss
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def _obj(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _batches(gen: MockGenerator, chunk: int = 2_000_000) -> Iterator[EventBatch]:
    """The generator's dataset (catalogue, registrations, history) as columnar batches."""
    cfg, pop, cat = gen.cfg, gen.pop, gen.cat
    seq = 0
    rows_t: list[str] = []
    # catalogue and registrations
    types, users, targets, payloads = [], [], [], []
    for p in cat.products:
        types.append("product.listed"); users.append(None); targets.append(p["product_id"])
        payloads.append({"name": p["name"], "category": p["category"], "price": p["price"]})
    for a in cat.apps:
        types.append("app.listed"); users.append(None); targets.append(a["app_id"])
        payloads.append({"name": a["name"], "category": a["category"]})
    plan, level, brand = pop.plan.tolist(), pop.level.tolist(), pop.brand.tolist()
    fee, tenure = pop.monthly_fee.tolist(), pop.tenure.tolist()
    for i in range(cfg.users):
        types.append("user.registered"); users.append(user_id(i)); targets.append(None)
        payloads.append({"plan_type": PLANS[plan[i]][0], "level": LEVELS[level[i]], "device_brand": BRANDS[brand[i]],
                         "monthly_fee": fee[i], "tenure_months": tenure[i]})
    n = len(types)
    yield EventBatch(np.arange(1, n + 1), _obj(types), _obj(users), _obj(targets), np.full(n, gen.history_start), _obj(payloads))
    seq = n
    h = gen._history_arrays()
    for a in range(0, len(h["user"]), chunk):
        u = h["user"][a : a + chunk]
        t = h["type"][a : a + chunk]
        tg = h["target"][a : a + chunk]
        m = len(u)
        tnames = [_TYPES[k] for k in t.tolist()]
        uids = [user_id(k) for k in u.tolist()]
        tids = [user_id(x) if k == 0 else (product_id(x) if k in (1, 2) else app_id(x)) for k, x in zip(t.tolist(), tg.tolist())]
        yield EventBatch(np.arange(seq + 1, seq + m + 1), _obj(tnames), _obj(uids), _obj(tids), h["ts"][a : a + chunk], _obj([None] * m))
        seq += m
    del rows_t


def sync(device: torch.device) -> None:
    """Wait for the device's queued kernels: CUDA runs them asynchronously, so a clock read without
    this measures only the launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(users: int, device: torch.device, events_per_user: float = 20.0) -> tuple[MockGenerator, HeteroGraph, float]:
    gen = MockGenerator(GeneratorConfig(users=users, products=60, apps=40, events_per_user=events_per_user))
    t = time.perf_counter()
    g = HeteroGraph(device, compact_min=200_000)
    for b in _batches(gen):
        g.apply(b)
    return gen, g, time.perf_counter() - t


def model_for(g: HeteroGraph, s: Settings) -> GraphEmbedder:
    torch.manual_seed(0)
    enc = EncoderConfig.fit(g.space, {t: g.raw_features(t) for t in NODE_TYPES}, {t: g.nodes[t].ids for t in NODE_TYPES})
    return GraphEmbedder.create(enc, s.hgt_hidden, s.embedding_dim, s.hgt_layers, s.hgt_heads, s.hgt_dropout).to(g.device).eval()


def bare_aggregation(g: HeteroGraph, hidden: int) -> float:
    """Baseline: one sum of hidden-size vectors over every edge (both directions), per layer."""
    x = {t: torch.randn(g.num_nodes(t), hidden, device=g.device) for t in NODE_TYPES}
    edges = g.edge_index_dict()
    sync(g.device)
    t0 = time.perf_counter()
    for et, ei in edges.items():
        for a in range(0, ei.shape[1], 2_000_000):
            src, dst = ei[0, a : a + 2_000_000], ei[1, a : a + 2_000_000]
            torch.zeros_like(x[et[2]]).index_add_(0, dst, x[et[0]][src])
    sync(g.device)
    return time.perf_counter() - t0


def bench_forward(users: int, s: Settings, device: torch.device) -> dict[str, Any]:
    gen, g, t_build = build(users, device)
    m = model_for(g, s)
    bare_aggregation(g, s.hgt_hidden)  # warm-up: CUDA's first kernels load and tune
    base = bare_aggregation(g, s.hgt_hidden) * s.hgt_layers
    with PeakRSS() as mem, torch.no_grad():
        if device.type == "cuda":
            m.embed_all(g, s.embed_chunk_edges)  # warm-up
        sync(device)
        t = time.perf_counter()
        m.embed_all(g, s.embed_chunk_edges)
        sync(device)
        fwd = time.perf_counter() - t
    r = {"users": users, "edges": g.num_edges() // 2, "build_s": t_build, "forward_s": fwd, "forward_extra_mb": mem.extra_mb,
         "rss_mb": psutil.Process().memory_info().rss / 2**20, "bare_aggregation_s": base}
    print(f"[{device.type}] {users:>9,} users  {r['edges']:>11,} interactions  graph build {t_build:7.1f} s   full forward {fwd:8.2f} s "
          f"(bare {s.hgt_layers}-layer sum-aggregation {base:6.2f} s, x{fwd / base:.1f})   forward peak +{mem.extra_mb:,.0f} MB, "
          f"process {r['rss_mb']:,.0f} MB", flush=True)
    return r


def bench_training(users: int, s: Settings, device: torch.device, steps_measured: int,
                   modes: tuple[str, ...] = ("full", "minibatch", "metis")) -> dict[str, Any]:
    """Time per training step of each mode on ``users`` users (``steps_measured`` steps, one for full),
    the epoch extrapolated from it, and peak extra memory; METIS partitioning timed on its own."""
    from scoring.evaluate import split_edges, with_edges
    from scoring.graph_schema import FORWARD_EDGE_TYPES
    from scoring.training import TrainParams, Trainer

    _, g, t_build = build(users, device)
    es = split_edges(g, s.train_split, 0)
    tg = with_edges(g, es.train)
    out: dict[str, Any] = {"users": users, "interactions": g.num_edges() // 2, "build_s": t_build}
    print(f"training at {users:,} users ({out['interactions']:,} interactions, graph build {t_build:.0f} s, "
          f"process {psutil.Process().memory_info().rss / 2**20:,.0f} MB)", flush=True)
    biggest = max(len(tg.edges[et]) for et in FORWARD_EDGE_TYPES)
    for mode in modes:
        if mode == "full" and g.num_edges() > s.train_full_max_edges:
            continue  # auto mode would not train full-batch here; its memory would not fit
        m = model_for(g, s)
        p = TrainParams.from_settings(s, mode, epochs=1, seed=0)
        p.max_steps = 1 if mode == "full" else steps_measured
        tr = Trainer(m, tg, {et: torch.arange(len(tg.edges[et]), device=device) for et in FORWARD_EDGE_TYPES}, p)
        row: dict[str, Any] = {}
        with PeakRSS() as mem:
            if mode == "metis":
                t = time.perf_counter()
                parts = tr._partitions()
                row["partition_s"], row["parts"] = time.perf_counter() - t, len(parts)
            t = time.perf_counter()
            loss = tr.epoch()
            dt = time.perf_counter() - t
        if mode == "full":
            ran, want = 1, 1
        elif mode == "minibatch":
            want = min(s.train_max_steps, -(-biggest // p.minibatch_edges))
            ran = min(steps_measured, want)
        else:
            want = min(s.train_max_steps, row["parts"])
            ran = min(steps_measured, want)
        row |= {"step_s": dt / ran, "steps_measured": ran, "steps_per_epoch": want, "epoch_s": dt / ran * want,
                "loss": loss, "extra_mb": mem.extra_mb, "rss_mb": psutil.Process().memory_info().rss / 2**20}
        if mode == "minibatch":
            # an epoch is capped at train_max_steps; one pass over every training edge takes this long
            row["full_pass_s"] = dt / ran * -(-biggest // p.minibatch_edges)
        out[mode] = row
        extra = f", METIS into {row['parts']} parts {row['partition_s']:.1f} s" if mode == "metis" else ""
        extra += f", a pass over all training edges {row['full_pass_s'] / 3600:.1f} h" if mode == "minibatch" else ""
        print(f"  {mode:9s}: {row['step_s']:6.2f} s per step, {want} steps per epoch -> {row['epoch_s']:7.1f} s per epoch "
              f"(measured {ran} steps, loss {loss:.3f}){extra}; peak +{mem.extra_mb:,.0f} MB, "
              f"process {row['rss_mb']:,.0f} MB", flush=True)
    return out


def _nodes_of(ev: Any) -> list[tuple[str, str]]:
    """The graph nodes an event touches (what the refresh must re-embed for it)."""
    from scoring.graph_schema import ATTRIBUTE_EVENTS, RELATIONS

    if ev.type in RELATIONS:
        et = RELATIONS[ev.type]
        return [(et[0], ev.user_id), (et[2], ev.target_id)]
    t_ = ATTRIBUTE_EVENTS.get(ev.type)
    return [(t_, ev.user_id if t_ == "user" else ev.target_id)] if t_ else []


def _stream(r: Any, store: Any, live: Iterator[Any], seq: int, rate: float, seconds: float,
            switch_to: LoadedModel | None) -> tuple[dict[str, Any], int]:
    """Feed ``rate`` events/s for ``seconds`` the way the dataflow's refresh step sees them: each tick
    the events that arrived are observed, ``tick()`` runs, its rows are written in one transaction (what
    ``EmbeddingSink`` does), then the loop sleeps out the tick interval. An event is done once every
    node it touched has a stored row at least as new as the event. With ``switch_to``, a new model
    version arrives a third of the way in."""
    from storage.embeddings import Embeddings

    pending: dict[tuple[str, str], deque[tuple[int, int]]] = {}
    arrival: list[float] = []
    remaining: list[int] = []
    done_at: list[float] = []
    start = time.perf_counter()
    sent = refreshed = hoods = 0
    loop_s: list[float] = []
    write_s = 0.0
    switch_at = start + seconds / 3 if switch_to is not None else math.inf
    switched_at = switch_done = math.nan
    while True:
        now = time.perf_counter()
        if now - start > seconds:
            break
        if now >= switch_at:
            r.begin_switch(switch_to)
            switch_at, switched_at = math.inf, now
        due = int((now - start) * rate) - sent
        batch = []
        for _ in range(due):
            seq += 1
            ev = next(live)
            batch.append((seq, ev))
            k = len(arrival)
            arrival.append(now)
            keys = set(_nodes_of(ev))
            remaining.append(len(keys))
            done_at.append(math.nan)
            for key in keys:
                pending.setdefault(key, deque()).append((seq, k))
        sent += due
        r.observe(batch)
        rows = r.tick()
        tw = time.perf_counter()
        if rows:
            with store.transaction() as conn:
                Embeddings(conn).put_many(rows)
        t_done = time.perf_counter()
        write_s += t_done - tw
        loop_s.append(t_done - now)
        n_hoods = sum(row[0] == NEIGHBOURHOOD for row in rows)
        refreshed += len(rows) - n_hoods
        hoods += n_hoods
        for t_, nid, _, _, row_seq in rows:
            q = pending.get((t_, nid))
            while q and q[0][0] <= row_seq:
                k = q.popleft()[1]
                remaining[k] -= 1
                if remaining[k] == 0:
                    done_at[k] = t_done
        if switch_to is not None and math.isnan(switch_done) and r.model_version == switch_to.version:
            switch_done = t_done - switched_at
        time.sleep(max(0.0, r.config.tick_s - (time.perf_counter() - now)))
    wall = time.perf_counter() - start
    arr = np.array(arrival)
    lat = np.array(done_at) - arr
    # events still pending at the end count with their age so far: at least as late as that
    lat = np.where(np.isnan(lat), time.perf_counter() - arr, lat)
    unfinished = int(np.isnan(np.array(done_at)).sum())
    p50, p99 = (float(np.percentile(lat, q)) for q in (50, 99)) if len(lat) else (math.nan,) * 2
    out = {"events": sent, "seconds": wall, "events_per_s": sent / wall, "nodes_refreshed": refreshed,
           "nodes_per_s": refreshed / wall, "neighbourhoods_per_s": hoods / wall,
           "neighbourhoods_at_end": len(r.hoods), "latency_p50_s": p50, "latency_p99_s": p99, "latency_max_s": float(lat.max()) if len(lat) else math.nan,
           "unfinished_events": unfinished, "queue_at_end": len(r.queue), "backfill_at_end": len(r.backfill), "loops": len(loop_s), "slowest_loop_s": max(loop_s),
           "loops_over_1s": sum(x > 1 for x in loop_s), "store_write_s": write_s, "model_switch_s": switch_done}
    return out, seq


def _versions(g: HeteroGraph, s: Settings, device: torch.device) -> list[LoadedModel]:
    """Model versions 1-3 over ``g``: a fresh model, then two slightly perturbed copies (switch targets)."""
    models: list[LoadedModel] = []
    for v in (1, 2, 3):
        m = model_for(g, s) if v == 1 else GraphEmbedder.from_config(models[0].config)
        if v > 1:
            torch.manual_seed(v)
            m.load_state_dict({k: t + 0.01 * torch.randn_like(t) if t.is_floating_point() else t
                               for k, t in models[0].embedder.state_dict().items()})
        models.append(LoadedModel(v, m.to(device).eval(), m.config(), {}))
    return models


def _print_stream(name: str, res: dict[str, Any], cfg: RefreshConfig, budget_s: float, seconds: float,
                  full_nodes_per_s: float) -> None:
    switch = (f"serving after {res['model_switch_s']:.1f} s" if math.isfinite(res["model_switch_s"])
              else "not serving yet at the end: a longer --stream-seconds shows the switch")
    print(f"live stream, {name.replace('_', ' ')} (tick {cfg.tick_s} s, budget {budget_s} s, {cfg.threads or 'default'} torch "
          f"thread(s)): {res['events']:,} events in "
          f"{res['seconds']:.1f} s ({res['events_per_s']:,.0f} ev/s), new model version after {seconds / 3:.0f} s "
          f"({switch}): {res['nodes_per_s']:,.0f} nodes refreshed/s (the full forward per node: {full_nodes_per_s:,.0f} nodes/s, "
          f"x{res['nodes_per_s'] / full_nodes_per_s:.2f}), {res['neighbourhoods_per_s']:,.0f} call neighbourhoods/s "
          f"({res['neighbourhoods_at_end']:,} pending at the end), "
          f"event->embedding p50 {res['latency_p50_s']:.3f} s p99 {res['latency_p99_s']:.3f} s max {res['latency_max_s']:.2f} s "
          f"(target p99 <= 2 s: {'OK' if res['latency_p99_s'] <= 2 else 'BELOW TARGET'}), {res['unfinished_events']} events "
          f"not yet refreshed at the end, queue {res['queue_at_end']} (+ backfill {res['backfill_at_end']}); {res['loops']} loops, slowest {res['slowest_loop_s']:.2f} s, "
          f"{res['loops_over_1s']} over 1 s; store writes {res['store_write_s']:.1f} s in all", flush=True)


def bench_refresh(users: int, s: Settings, device: torch.device, rate: float, seconds: float,
                  profile_path: Path | None = None) -> dict[str, Any]:
    from scoring.refresh import IncrementalRefresher
    from storage.event_store import EventStore
    from storage.embeddings import Embeddings

    gen, g, _ = build(users, device)
    tmp = tempfile.mkdtemp(prefix="bench-emb-")
    settings = s.model_copy(update={"db": Path(tmp) / "bench.db"})
    models = _versions(g, s, device)
    cfg = RefreshConfig.from_settings(settings)
    r = IncrementalRefresher(settings, graph=g, model=models[0], config=RefreshConfig(**cfg.__dict__), load_stored=False)
    store = EventStore(settings.db)
    # nothing is stored yet: every node pending; one full forward (as a pass of small steps) embeds them
    with torch.no_grad():
        if device.type == "cuda":
            models[0].embedder.embed_all(g, s.embed_chunk_edges)  # warm-up (CUDA's first kernels)
        sync(device)
        t = time.perf_counter()
        models[0].embedder.embed_all(g, s.embed_chunk_edges)
        sync(device)
        direct_s = time.perf_counter() - t
    t = time.perf_counter()
    rows = r.run_full_pass(emit="pending")
    full_s = time.perf_counter() - t
    assert len(rows) == g.num_nodes() and len(r.queue) == 0
    t = time.perf_counter()
    with store.transaction() as conn:
        Embeddings(conn).put_many(rows)
    write_all_s = time.perf_counter() - t
    del rows
    t = time.perf_counter()
    hoods = r.tick(budget_s=math.inf)  # every user's call neighbourhood, from the rows the pass wrote
    hoods_s = time.perf_counter() - t
    assert len(hoods) == g.num_nodes("user") and len(r.hoods) == 0
    del hoods

    gen.pop.names_and_cities  # Faker names for new users: generated once, before the clock runs
    live = gen.live(0, time.time(), rate)
    seq = g.last_seq
    # cost of the nodes touched by one event: observe it and refresh them (rows built, not written)
    costs = []
    for _ in range(30):
        seq += 1
        e = next(live)
        t = time.perf_counter()
        r.observe([(seq, e)])
        r.tick()
        costs.append(time.perf_counter() - t)
    one_event_s = float(np.median(costs))
    if profile_path is not None:
        seq = _profile_events(r, live, seq, device, profile_path)
    print(f"[{device.type}] refresh at {users:,} users: full forward {full_s:.2f} s (a pass of {cfg.pass_chunk_edges:,}-edge steps, rows "
          f"built; direct embed_all {direct_s:.2f} s, pass/direct x{full_s / direct_s:.1f} (target <= 2); writing its "
          f"{g.num_nodes():,} rows {write_all_s:.2f} s; then every user's call neighbourhood {hoods_s:.2f} s): "
          f"{g.num_nodes() / full_s:,.0f} nodes/s in a full forward; nodes of one event {1000 * one_event_s:.1f} ms "
          f"-> {full_s / one_event_s:.0f}x cheaper (target >= 100x: {'OK' if full_s / one_event_s >= 100 else 'BELOW TARGET'})",
          flush=True)
    out: dict[str, Any] = {"users": users, "device": device.type, "rate": rate, "full_forward_s": full_s,
                           "direct_forward_s": direct_s, "write_all_rows_s": write_all_s, "all_neighbourhoods_s": hoods_s,
                           "one_event_refresh_s": one_event_s, "speedup": full_s / one_event_s,
                           "full_forward_nodes_per_s": g.num_nodes() / full_s}
    if seconds <= 0:
        store.close()
        r.close()
        return out
    # the same live stream with a model switch, twice: the baseline runs every tick unbounded, a full
    # pass inside the tick that starts it (as before the time budget and the pass thread), then the
    # settings as they are
    runs = (("baseline_full_pass_in_one_tick", math.inf, False, models[1]),
            ("time_budget_and_pass_thread", cfg.tick_budget_s, cfg.pass_background, models[2]))
    for name, budget_s, background, model in runs:
        r.config.tick_budget_s, r.config.pass_background = budget_s, background
        res, seq = _stream(r, store, live, seq, rate, seconds, model)
        out[name] = res
        _print_stream(name, res, cfg, budget_s, seconds, out["full_forward_nodes_per_s"])
    store.close()
    r.close()
    return out


def _profile_events(r: Any, live: Iterator[Any], seq: int, device: torch.device, path: Path, events: int = 10) -> int:
    """torch.profiler over ``events`` one-event refreshes: where their time goes (kernels, copies and
    synchronisations on CUDA), as a table in ``path``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(events):
            seq += 1
            r.observe([(seq, next(live))])
            r.tick()
    tables = [f"{events} one-event refreshes on {device}, sorted by {key}\n"
              + prof.key_averages().table(sort_by=key, row_limit=40)
              for key in ("cpu_time_total", "self_cpu_time_total")]
    path.write_text("\n\n".join(tables))
    return seq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000", help="user counts for the full-forward benchmark")
    ap.add_argument("--train-users", type=int, default=100_000)
    ap.add_argument("--train-steps", type=int, default=20, help="mini-batch / partition steps measured (an epoch is extrapolated)")
    ap.add_argument("--train-sample-users", type=int, default=1_000_000,
                    help="also a bounded mini-batch and METIS sample at this many users (0: skip)")
    ap.add_argument("--train-sample-steps", type=int, default=5, help="steps measured per mode in that sample")
    ap.add_argument("--refresh-users", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=5000.0, help="simulated live events per second")
    ap.add_argument("--stream-seconds", type=float, default=20.0, help="0: skip the live stream")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: forward,train,refresh")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    ap.add_argument("--profile-refresh", metavar="PATH", type=Path,
                    help="also profile ten one-event refreshes (torch.profiler) into this file")
    args = ap.parse_args()
    s = Settings()  # UPS_DEVICE and the rest from the environment, as the commands read them
    device = resolve_device(s.device)
    print(f"device: {device} (UPS_DEVICE={s.device})", flush=True)
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, Any] = {"device": device.type, "torch_threads": torch.get_num_threads()}
    if "forward" not in skip:
        results["forward"] = []
        for n in args.sizes.split(","):
            results["forward"].append(bench_forward(int(n), s, device))
            if args.json:  # after each size: a run cut short keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=2))
    if "train" not in skip:
        results["training"] = bench_training(args.train_users, s, device, args.train_steps)
        if args.train_sample_users:
            results["training_sample"] = bench_training(
                args.train_sample_users, s, device, args.train_sample_steps, modes=("minibatch", "metis")
            )
    if "refresh" not in skip:
        results["refresh"] = bench_refresh(args.refresh_users, s, device, args.rate, args.stream_seconds,
                                           args.profile_refresh)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
