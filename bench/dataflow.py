"""Dataflow benchmark, all measured in one run over the same mock events (default 1 000 000):

* bare-wN   a bare Bytewax flow: the same mock source, key by user, ``stateful_map`` count (baseline)
* sqlite    raw SQLite appends: pre-serialised rows, ``executemany`` per 10 000 into the same schema
* full-wN   ``ups dataflow --max-events N --workers N``: validate + append + fold + profile projection,
            recovery on (snapshots every ``UPS_SNAPSHOT_INTERVAL``), profiles flushed every ``UPS_FLUSH_INTERVAL``;
            its CPU seconds and peak memory include the log writer process (:mod:`dataflow.log_writer`)
* replay    ``ups replay`` of the log the first full run wrote (rebuild of the profiles projection)

Bare and full run with each worker count given (one process, Bytewax worker threads); the ratio
compares the best of each. Each phase runs in its own process, so its peak memory (max RSS) is its own.
Targets on the 2-core development machine: full >= 50 % of bare and >= 100 000 events/s; replay >=
150 000 events/s. CPU seconds are printed too: on a shared machine wall time also counts others' load.

    python -m bench.dataflow [--events 1000000] [--users 20000] [--batch 10000] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

TARGET_RATIO = 0.5
TARGET_FULL = 100_000
TARGET_REPLAY = 150_000


def _settings(db: Path, users: int, batch: int) -> Any:
    from config.settings import Settings

    # live_rate at its maximum: the source emits as fast as the flow takes events
    return Settings(db=db, users=users, live_rate=1_000_000, batch_size=batch, live_base_ts=1_767_225_600.0)


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the full flow's log writer process)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def _peak_mb() -> float:
    """Peak resident memory of this process plus that of its largest finished child (max RSS each)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (own + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def _measure(fn: Callable[[], int]) -> dict[str, float]:
    cpu0, t0 = _cpu_s(), time.perf_counter()
    events = fn()
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    return {"events": events, "wall_s": wall, "cpu_s": cpu, "rate": events / wall, "peak_mb": _peak_mb()}


def phase_bare(db: Path, events: int, users: int, batch: int, workers: int = 1) -> dict[str, float]:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.run import cli_main

    from dataflow.control import FlowControl
    from dataflow.flow import mock_source

    s = _settings(db, users, batch)

    class Null(StatelessSinkPartition[Any]):
        def write_batch(self, items: list[Any]) -> None:
            pass

    class NullSink(DynamicSink[Any]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Null:
            return Null()

    def count(n: int | None, _e: Any) -> tuple[int, int]:
        n = (n or 0) + 1
        return n, n

    control = FlowControl(rate=s.live_rate)
    source = mock_source(s, control, events)
    source.gen.pop.names_and_cities  # noqa: B018 - Faker warm-up, as the full flow's happens before timing too
    flow = Dataflow("bare")
    batches = op.input("in", flow, source)
    evs = op.flat_map("events", batches, lambda b: b.items)
    counts = op.stateful_map("count", op.key_on("user", evs, lambda e: e.user_id), count)
    op.output("out", counts, NullSink())
    return _measure(lambda: (cli_main(flow, workers_per_process=workers), events)[1])


def phase_sqlite(db: Path, events: int, users: int, batch: int, workers: int = 1) -> dict[str, float]:
    from dataflow.generator import GeneratorConfig, MockGenerator
    from storage.bare import event_rows, insert_events
    from storage.event_store import EventStore

    gen = MockGenerator(GeneratorConfig(users=users))
    store = EventStore(db)
    s = _settings(db, users, batch)
    store.tune_writer(s.sqlite_cache_mb, 1000)  # the flow writer's page cache; SQLite's own WAL checkpoints
    spent = 0.0
    cpu = 0.0
    done = 0
    chunk = 0
    while done < events:
        evs = []
        while len(evs) < batch and done + len(evs) < events:
            evs.extend(gen.live_chunk(chunk, 1_767_225_600.0, 1_000_000.0))
            chunk += 1
        evs = evs[: min(batch, events - done)]
        rows = event_rows(evs)  # serialised outside the timing: the baseline is SQLite itself
        c0, t0 = time.process_time(), time.perf_counter()
        insert_events(store.conn, rows)
        spent += time.perf_counter() - t0
        cpu += time.process_time() - c0
        done += len(evs)
    store.close()
    return {
        "events": done,
        "wall_s": spent,
        "cpu_s": cpu,
        "rate": done / spent,
        "peak_mb": _peak_mb(),
    }


def phase_full(db: Path, events: int, users: int, batch: int, workers: int = 1) -> dict[str, float]:
    from dataflow.flow import mock_source
    from dataflow.control import FlowControl
    from dataflow.runner import run_dataflow

    s = _settings(db, users, batch)
    control = FlowControl(rate=s.live_rate)
    source = mock_source(s, control, events)
    source.gen.pop.names_and_cities  # noqa: B018 - Faker warm-up outside the timing (as for bare)
    out = _measure(lambda: run_dataflow(s, ingest=source, control=control, workers=workers).events_in)
    from storage.event_store import EventStore

    with EventStore(db) as store:
        out["profiles"] = store.profiles.count()
        out["checkpoint"] = store.checkpoints.get("profiles")
        out["last_seq"] = store.last_seq()
    return out


def phase_replay(db: Path, events: int, users: int, batch: int, workers: int = 1) -> dict[str, float]:
    from dataflow.runner import replay

    s = _settings(db, users, batch)
    return _measure(lambda: replay(s).events)


PHASES = {"bare": phase_bare, "sqlite": phase_sqlite, "full": phase_full, "replay": phase_replay}


def _child(name: str, args: tuple[Any, ...], q: Any) -> None:
    q.put(PHASES[name](*args))


def run_phase(name: str, *args: Any) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(name, args, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=10_000, help="events per source batch / append transaction")
    ap.add_argument("--workers", default="1,2", help="worker counts for bare and full, comma-separated")
    a = ap.parse_args(argv)
    counts = [int(w) for w in a.workers.split(",")]
    plan = [(f"bare-w{w}", "bare", w) for w in counts] + [("sqlite", "sqlite", 1)]
    plan += [(f"full-w{w}", "full", w) for w in counts] + [("replay", "replay", 1)]
    res: dict[str, dict[str, float]] = {}
    print(f"{a.events:,} mock events, {a.users:,} users, batches of {a.batch:,}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for label, phase, w in plan:
            # each phase its own database; replay rebuilds the log the first full run wrote
            name = {"bare": f"bare-w{w}", "sqlite": "raw", "full": f"flow-w{w}", "replay": f"flow-w{counts[0]}"}
            db = Path(tmp) / f"{name[phase]}.db"
            res[label] = r = run_phase(phase, db, a.events, a.users, a.batch, w)
            print(
                f"{label:8s} {int(r['events']):>10,d} events  {r['wall_s']:7.2f} s  {r['rate']:>10,.0f} events/s  "
                f"cpu {r['cpu_s']:7.2f} s ({r['events'] / max(r['cpu_s'], 1e-9):>9,.0f} events per cpu-s)  "
                f"peak {r['peak_mb']:,.0f} MB",
                flush=True,
            )
            if phase == "full":
                print(f"         {int(r['profiles']):,} profiles, checkpoint {int(r['checkpoint']):,} of last seq "
                      f"{int(r['last_seq']):,}", flush=True)
    best_bare = max((res[f"bare-w{w}"] for w in counts), key=lambda r: r["rate"])
    best_full = max((res[f"full-w{w}"] for w in counts), key=lambda r: r["rate"])
    rep = res["replay"]
    ratio = best_full["rate"] / best_bare["rate"]
    for w in counts:
        full, bare = res[f"full-w{w}"], res[f"bare-w{w}"]
        # the CPU ratio is what others' load on a shared machine does not move
        print(f"full / bare with {w} worker(s): {full['rate'] / bare['rate']:.2f} "
              f"(per CPU second: {bare['cpu_s'] / max(full['cpu_s'], 1e-9):.2f})")
    checks = [
        (f"best full / best bare = {ratio:.2f} (target >= {TARGET_RATIO})", ratio >= TARGET_RATIO),
        (f"best full = {best_full['rate']:,.0f} events/s (target >= {TARGET_FULL:,})", best_full["rate"] >= TARGET_FULL),
        (f"replay = {rep['rate']:,.0f} events/s (target >= {TARGET_REPLAY:,})", rep["rate"] >= TARGET_REPLAY),
    ]
    for text, ok in checks:
        print(f"{text}: {'OK' if ok else 'BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
