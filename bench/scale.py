"""Whole-pipeline scale benchmark: what ``ups init --users N`` does, stage by stage, on the configured
device (``UPS_DEVICE``), into a fresh database; one table of each stage's time, rate and peak memory
(resident set, sampled), against a bare baseline where one exists, measured in the same run:

* draw (the mock dataset as the store's rows, not stored: the generator's own rate);
* generate (mock dataset as columns -> the event log, and the profile fold's accumulators fed from the
  same columns, as ``ups init`` does) against a raw SQLite insert of the same rows into a table without
  indexes (the rows handed over ready-made);
* fold (the profiles of the fold made while generating, written) against nothing bare (what it replaces
  is the Bytewax replay);
* graph (the store's columns -> the HGT graph), train (the initial HGT), fusion: no bare baseline;
* embed (a forward pass and the rows written) against a raw ``executemany`` of as many embedding
  rows, already built, into the same schema.

    python -m bench.scale [--users 100000] [--keep DB]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from config.settings import Settings
from storage.db import connect
from storage.bare import insert_bare_events, open_bare_log, upsert_embeddings


class Stages(list["Stage"]):
    """The stages measured so far; each is printed as it is added (a long run shows its figures as it
    goes, and a run cut short keeps them)."""

    def append(self, stage: "Stage") -> None:
        super().append(stage)
        print(stage.row(), flush=True)


@dataclass
class Stage:
    name: str
    seconds: float
    count: int
    unit: str
    peak_mb: float
    cpu_s: float
    baseline_s: float | None = None

    def row(self) -> str:
        rate = self.count / self.seconds if self.seconds > 0 else float("nan")
        per_cpu = self.count / self.cpu_s if self.cpu_s > 0 else float("nan")
        base = (f"{self.count / self.baseline_s:>12,.0f}/s  {self.baseline_s / self.seconds:>5.2f}"
                if self.baseline_s else f"{'-':>14}  {'-':>5}")
        return (f"{self.name:<9} {self.seconds:>8.1f} s {self.count:>12,} {self.unit:<7} {rate:>12,.0f}/s "
                f"{per_cpu:>12,.0f}/CPU-s {self.peak_mb:>8,.0f} MB  {base}")


class PeakRss:
    """The largest resident set of this process while the block runs (sampled every 20 ms)."""

    def __enter__(self) -> "PeakRss":
        self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """What ``fn`` returns, its wall seconds, the peak RSS while it ran and its CPU seconds (this process,
    all threads: what a loaded machine distorts least)."""
    with PeakRss() as mem:
        t, cpu = time.perf_counter(), time.process_time()
        out = fn()
        seconds, cpu_s = time.perf_counter() - t, time.process_time() - cpu
    return out, seconds, mem.peak, cpu_s


def raw_insert_seconds(gen: Any, path: Path) -> float:
    """A bare table (no index, no conflict clause) and executemany of the generator's rows, only the
    inserts timed."""
    conn = open_bare_log(path)
    spent = 0.0
    for batch in gen.dataset_columns():
        rows = list(batch.rows(time.time()))
        t = time.perf_counter()
        insert_bare_events(conn, rows)
        spent += time.perf_counter() - t
    conn.close()
    return spent


def raw_embedding_seconds(n: int, dim: int, path: Path, chunk: int = 50_000) -> float:
    """A raw executemany of ``n`` embedding rows (float32 blobs), built before the clock starts."""
    conn = connect(path)
    vec = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
    now = time.time()
    rows = [("user", f"U{i:07d}", vec[i].tobytes(), dim, 1, i, now) for i in range(n)]
    t = time.perf_counter()
    for a in range(0, n, chunk):
        upsert_embeddings(conn, rows[a:a + chunk])
    seconds = time.perf_counter() - t
    conn.close()
    return seconds


def draw(gen: Any) -> int:
    """Every row of the dataset, made and dropped: the generator's work without the store's."""
    n = 0
    for batch in gen.dataset_columns():
        for _ in batch.rows(0.0):
            n += 1
    return n


def run(users: int, folder: Path) -> list[Stage]:
    from dataflow.generator import GeneratorConfig, MockGenerator
    from config.device import resolve_device
    from dataflow.oracle import retention_oracle
    from dataflow.prepare import generate_if_empty, project
    from scoring.graph_loader import build_graph
    from scoring.orchestration import train_fusion
    from storage.event_store import EventStore

    db = folder / "scale.db"
    settings = Settings(db=db, users=users)
    stages = Stages()
    cfg = GeneratorConfig.from_settings(settings)
    drawn, s, peak, cpu = _timed(lambda: draw(MockGenerator(cfg)))
    stages.append(Stage("draw", s, drawn, "events", peak, cpu))
    # as ups init: the profiles are folded from the columns as they are appended, then written
    generated, s, peak, cpu = _timed(lambda: generate_if_empty(settings, lambda f, m: None))
    stages.append(Stage("generate", s, generated.appended, "events", peak, cpu,
                        raw_insert_seconds(MockGenerator(cfg), folder / "raw.db")))
    folded, s, peak, cpu = _timed(lambda: project(settings, lambda f, m: None, generated.fold))
    stages.append(Stage("fold", s, folded, "events", peak, cpu))
    generated.fold = None  # its accumulators are written: not kept through the model stages
    with EventStore(db) as store:
        graph, s, peak, cpu = _timed(lambda: build_graph(store, device=resolve_device(settings.device)))
        stages.append(Stage("graph", s, graph.num_edges() // 2, "edges", peak, cpu))
    for stage in _model_stages(settings, graph, users, folder):
        stages.append(stage)
    del graph  # as ups init: the fusion runs without the graph in memory
    fusion, s, peak, cpu = _timed(lambda: train_fusion(settings, lambda f, m: None, samples=settings.bootstrap_fusion_samples,
                                                  epochs=settings.bootstrap_fusion_epochs, lr=settings.fusion_lr,
                                                  oracle=retention_oracle(db, settings)))
    stages.append(Stage("fusion", s, users, "users", peak, cpu))
    return stages


def _model_stages(settings: Settings, graph: Any, users: int, folder: Path) -> list[Stage]:
    """As ups init: the graph read once, the HGT trained on its users' sample, the embeddings of all of it."""
    from dataflow.prepare import initial_train_plan
    from scoring.embed import embed_all
    from scoring.training import train_hgt

    plan = initial_train_plan(settings, users)
    hgt, s, peak, cpu = _timed(lambda: train_hgt(settings, epochs=plan.epochs, sample_ratio=plan.share,
                                                 mode=plan.mode, graph=graph))
    aucs = {k: round(v["trained"], 3) for k, v in hgt["test_auc"].items() if v.get("trained") is not None}
    print(f"          HGT {hgt['mode']}, {plan.epochs} epoch(s) on {plan.share:.0%} of the users; held-out link AUC "
          f"mean {np.mean(list(aucs.values())):.3f}: {aucs}", flush=True)
    emb, s2, peak2, cpu2 = _timed(lambda: embed_all(settings, graph=graph))
    written = int(emb["written"])
    return [Stage("train", s, int(hgt["nodes"]["user"]), "users", peak, cpu),
            Stage("embed", s2, written, "rows", peak2, cpu2,
                  raw_embedding_seconds(written, settings.embedding_dim, folder / "raw_emb.db"))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--keep", type=Path, help="folder to keep the database in (default: a temporary one)")
    args = p.parse_args()
    from config.device import resolve_device

    load = os.getloadavg()
    print(f"{args.users:,} users, device {resolve_device(Settings().device)}, {os.cpu_count()} CPUs, load "
          f"{load[0]:.1f} before, {time.strftime('%Y-%m-%d')}")
    print(f"{'stage':<9} {'time':>10} {'count':>20} {'rate':>14} {'per CPU-s':>18} {'peak RSS':>11}  {'bare rate':>14}  ratio",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        stages = run(args.users, folder)
    total = sum(stage.seconds for stage in stages)
    print(f"total     {total:>8.1f} s (the bare baselines' runs not counted); ratio = bare time / stage time; "
          f"load {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
