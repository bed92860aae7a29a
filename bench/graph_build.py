"""Graph-build benchmark: ``build_graph`` from an event store (its graph columns, the integer-coded
events its appends wrote, read as numpy arrays; the graph built with numpy/torch on the configured
device) against the per-event builder it replaced (every event read as an object, ``EventStore.read``,
and applied through the live path ``HeteroGraph.apply_events`` in batches), measured in the same run on
the same store; both must give the same node and edge counts. Target: >= 2M interactions/s.

    python -m bench.graph_build [--users 50000] [--db PATH]

Without ``--db`` a store of the mock dataset at ``--users`` users is generated first (not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from config.device import resolve_device
from config.settings import Settings
from dataflow.bootstrap import append_dataset
from dataflow.generator import GeneratorConfig, MockGenerator
from scoring.graph import HeteroGraph
from scoring.graph_schema import RELATIONS
from scoring.graph_loader import build_graph
from storage.event_store import EventStore

TARGET_INTERACTIONS_PER_S = 2_000_000


def _timed(fn: object) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: what a shared, loaded machine distorts least)."""
    t, cpu = time.perf_counter(), time.process_time()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t, time.process_time() - cpu


def per_event_build(store: EventStore, device: torch.device, batch: int = 50_000) -> HeteroGraph:
    """The baseline: the log read event by event and applied in batches through the live path."""
    graph = HeteroGraph(device)
    pairs: list[tuple[int, Any]] = []
    for e in store.read():
        pairs.append((e.seq, e))
        if len(pairs) >= batch:
            graph.apply_events(pairs)
            pairs = []
    graph.apply_events(pairs)
    return graph


def _sizes(g: HeteroGraph) -> tuple[int, int]:
    return g.num_nodes(), g.num_edges()


def bench(db: Path, device: torch.device) -> dict[str, Any]:
    graphs: dict[str, HeteroGraph] = {}
    with EventStore(db) as store:  # (read-write: an older store is migrated on open)
        interactions = sum(n for t, n in store.counts_by_type().items() if t in RELATIONS)
        build_graph(store, device=device)  # warm-up: page cache, CUDA context
        base_wall, base_cpu = _timed(lambda: graphs.update(base=per_event_build(store, device)))
        wall, cpu = _timed(lambda: graphs.update(bulk=build_graph(store, device=device)))
    if _sizes(graphs["bulk"]) != _sizes(graphs["base"]):
        raise SystemExit(f"the builders disagree: nodes, edges {_sizes(graphs['bulk'])} != {_sizes(graphs['base'])}")
    return {"device": device.type, "interactions": interactions, "build_s": wall, "build_cpu_s": cpu,
            "per_event_s": base_wall, "per_event_cpu_s": base_cpu, "interactions_per_s": interactions / wall,
            "interactions_per_cpu_s": interactions / cpu, "per_event_interactions_per_s": interactions / base_wall,
            "per_event_interactions_per_cpu_s": interactions / base_cpu, "load_average": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--db", type=Path, help="an existing store (default: generate one)")
    ap.add_argument("--json", metavar="PATH", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()
    device = resolve_device(Settings().device)
    with tempfile.TemporaryDirectory(prefix="bench-graph-") as tmp:
        db = args.db
        if db is None:
            db = Path(tmp) / "ups.db"
            with EventStore(db) as store:
                append_dataset(store, MockGenerator(GeneratorConfig(users=args.users)), 50_000)
        r = bench(db, device)
    rate = r["interactions_per_s"]
    print(f"[{device.type}] graph build of {r['interactions']:,} interactions (load average "
          f"{', '.join(f'{x:.1f}' for x in r['load_average'])}):\n"
          f"  build_graph (columns)  {r['build_s']:6.2f} s  {rate / 1e6:5.2f}M/s   {r['build_cpu_s']:6.2f} CPU-s  "
          f"{r['interactions_per_cpu_s'] / 1e6:5.2f}M per CPU-s\n"
          f"  per-event baseline     {r['per_event_s']:6.2f} s  {r['per_event_interactions_per_s'] / 1e6:5.2f}M/s   "
          f"{r['per_event_cpu_s']:6.2f} CPU-s  {r['per_event_interactions_per_cpu_s'] / 1e6:5.2f}M per CPU-s\n"
          f"  speed-up x{r['per_event_s'] / r['build_s']:.1f} wall, x{r['per_event_cpu_s'] / r['build_cpu_s']:.1f} CPU   "
          f"(target >= {TARGET_INTERACTIONS_PER_S / 1e6:.0f}M/s: {'OK' if rate >= TARGET_INTERACTIONS_PER_S else 'BELOW TARGET'})")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
