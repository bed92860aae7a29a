"""Event-store benchmark: EventStore.append at batch sizes 1, 100, 10 000 against raw
``sqlite3.executemany`` of the same rows into the same schema, measured in the same run; then the
read rate. Target: batched append at least half of the raw baseline.

    python -m bench.store [--events 200000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from dataflow.generator import GeneratorConfig, MockGenerator
from storage.bare import event_rows, insert_events
from storage.db import connect
from storage.event_store import EventStore


def bench(events: int) -> dict[str, float]:
    gen = MockGenerator(GeneratorConfig(users=max(2, events // 20), events_per_user=20))
    evs = []
    for e in gen.dataset():
        evs.append(e)
        if len(evs) >= events:
            break
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (1, 100, 10_000):
            n = min(len(evs), 20_000 if batch == 1 else len(evs))
            subset = evs[:n]
            # baseline: pre-serialised rows, one executemany per batch, same table and indexes
            raw = connect(Path(tmp) / f"raw{batch}.db")
            rows = event_rows(subset)
            t = time.perf_counter()
            for i in range(0, n, batch):
                insert_events(raw, rows[i : i + batch])
            raw_rate = n / (time.perf_counter() - t)
            raw.close()
            store = EventStore(Path(tmp) / f"store{batch}.db")
            t = time.perf_counter()
            for i in range(0, n, batch):
                store.append(subset[i : i + batch])
            rate = n / (time.perf_counter() - t)
            if batch == 10_000:
                t = time.perf_counter()
                count = sum(1 for _ in store.read())
                results["read_events_per_s"] = count / (time.perf_counter() - t)
            store.close()
            results[f"append_b{batch}_events_per_s"] = rate
            results[f"raw_b{batch}_events_per_s"] = raw_rate
            results[f"ratio_b{batch}"] = rate / raw_rate
            print(f"batch {batch:>6}: EventStore.append {rate:>10,.0f} ev/s   raw executemany {raw_rate:>10,.0f} ev/s"
                  f"   ratio {rate / raw_rate:.2f}")
    print(f"read (streaming, page 10 000): {results['read_events_per_s']:,.0f} ev/s")
    verdict = "OK" if results["ratio_b10000"] >= 0.5 else "BELOW TARGET"
    print(f"target: batched append >= 0.5 x raw baseline -> {results['ratio_b10000']:.2f} {verdict}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = bench(args.events)
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
