"""Graph-build benchmark: ``build_graph`` from an event store (columns read in bulk, the graph built
with numpy/torch on the configured device) against a bare read of the same columns row by row
(``fetchall``, nothing built), measured in the same run. Target: >= 2M interactions/s.

    python -m bench.graph_build [--users 50000] [--db PATH]

Without ``--db`` a store of the mock dataset at ``--users`` users is generated first (not timed).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from config.device import resolve_device
from config.settings import Settings
from dataflow.bootstrap import append_dataset
from dataflow.generator import GeneratorConfig, MockGenerator
from scoring.graph_schema import RELATIONS
from scoring.graph_loader import build_graph
from storage.event_store import EventStore

TARGET_INTERACTIONS_PER_S = 2_000_000


def _timed(fn: object) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: what a shared, loaded machine distorts least)."""
    t, cpu = time.perf_counter(), time.process_time()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t, time.process_time() - cpu


def bench(db: Path, device: torch.device) -> dict[str, Any]:
    with EventStore(db) as store:  # (read-write: an older store is migrated on open)
        interactions = sum(n for t, n in store.counts_by_type().items() if t in RELATIONS)
        raw_wall, raw_cpu = _timed(lambda: store.conn.execute("SELECT seq, type, user_id, target_id, ts FROM events").fetchall())
        build_graph(store, device=device)  # warm-up: page cache, CUDA context
        wall, cpu = _timed(lambda: build_graph(store, device=device))
    return {"device": device.type, "interactions": interactions, "build_s": wall, "build_cpu_s": cpu, "raw_read_s": raw_wall,
            "raw_read_cpu_s": raw_cpu, "interactions_per_s": interactions / wall, "interactions_per_cpu_s": interactions / cpu}


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
    print(f"[{device.type}] graph build: {r['interactions']:,} interactions in {r['build_s']:.2f} s "
          f"({rate / 1e6:.2f}M/s; {r['build_cpu_s']:.2f} CPU-s, {r['interactions_per_cpu_s'] / 1e6:.2f}M per CPU-s); "
          f"bare row read of the same columns {r['raw_read_s']:.2f} s ({r['raw_read_cpu_s']:.2f} CPU-s)   "
          f"(target >= {TARGET_INTERACTIONS_PER_S / 1e6:.0f}M/s: {'OK' if rate >= TARGET_INTERACTIONS_PER_S else 'BELOW TARGET'})")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
