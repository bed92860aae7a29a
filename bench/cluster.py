"""Cluster benchmark: the live flow into PostgreSQL against SQLite, with one flow process and with two
(a Bytewax cluster, ``-i/-a``, on this machine), and the replay rate from each; one run, the same mock
stream for every phase.

* sqlite-1p  ``ups dataflow --max-events N`` into a SQLite file: the embedded default, the baseline
* pg-1p      the same into a PostgreSQL database
* sqlite-2p  two ``ups dataflow`` processes (``-i 0|1 -a …``, one worker each) into one SQLite file
* pg-2p      the same two processes into one PostgreSQL database
* replay     ``ups replay`` of the log that sqlite-1p and pg-1p wrote (the profiles rebuilt from nothing)
* generate   the initial dataset of ``--users`` users appended in bulk (``append_dataset``: what ``ups
             generate`` and ``ups init`` run) into a SQLite file, the baseline, and into a PostgreSQL
             database; and into PostgreSQL through ``append`` of ``Event`` objects (the path bulk appends
             took there before they had their own COPY)

A flow's rate is its events over the span their appends took in the log (the first live event's
``recorded_at`` to the last one's): start-up (imports, a cluster's handshake) is paid once per start and
left out; the wall time of the whole run is printed beside it. Every run checks its count: each event in
the log once. Without ``--pg`` a throw-away PostgreSQL server is started from Debian's ``postgresql``
binaries (``tests/pg_server.py``), with fsync on, on this machine.

    python -m bench.cluster [--events 100000] [--users 5000] [--batch 2000] [--pg postgresql://…/postgres]
                            [--phases flow,generate]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

#: the throw-away server of the tests (tests/ is not a package: its folder goes on the path)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


def _env(db: str, state: Path, users: int, batch: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPS_")}
    env.update(UPS_DB=db, UPS_PG_STATE_DIR=str(state), UPS_USERS=str(users), UPS_LIVE_RATE="1000000",
               UPS_BATCH_SIZE=str(batch), UPS_LIVE_BASE_TS="1767225600", UPS_DEVICE="cpu",
               UPS_REFRESH_IN_FLOW="false")
    return env


def run_flow(db: str, state: Path, events: int, users: int, batch: int, processes: int) -> dict[str, float]:
    """``processes`` flow processes to the end of ``events`` mock events; their rate in the log."""
    from storage import open_store

    with open_store(db) as store:
        base = store.last_seq()
    argv = [sys.executable, "-m", "ups", "dataflow", "--max-events", str(events), "--quiet"]
    addresses = ";".join(f"127.0.0.1:{p}" for p in _free_ports(processes))
    cluster = [["-i", str(i), "-a", addresses] for i in range(processes)] if processes > 1 else [[]]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([*argv, *extra], env=_env(db, state, users, batch), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
             for extra in cluster]
    for p in procs:
        if p.wait(timeout=3600) != 0:
            raise RuntimeError(f"ups dataflow exited with {p.returncode}: {p.stderr.read() if p.stderr else ''}")
    wall = time.perf_counter() - t0
    with open_store(db) as store:
        last = store.last_seq()
        first_at = store.first_recorded_after(base) or 0.0
        last_at = store.first_recorded_after(last - 1) or 0.0
        count = store.count()
    if last - base != events or count != last:
        raise RuntimeError(f"{last - base} events appended for {events} (log of {count}, last seq {last})")
    span = max(last_at - first_at, 1e-9)
    return {"events": events, "rate": events / span, "span_s": span, "wall_s": wall}


def run_replay(db: str, state: Path, users: int, batch: int) -> dict[str, float]:
    from config.settings import Settings
    from dataflow.runner import replay

    s = Settings(db=db, pg_state_dir=state, users=users, batch_size=batch, device="cpu")
    summary = replay(s)
    return {"events": summary.events, "rate": summary.rate, "span_s": summary.seconds, "wall_s": summary.seconds}


def run_generate(db: str, users: int, via: str) -> dict[str, float]:
    """The dataset of ``users`` users into ``db`` in transactions of 50 000 events: as columns
    (``via="columns"``, ``append_dataset``) or as ``Event`` objects through ``append``."""
    from pydantic_core import from_json

    from config.settings import Settings
    from dataflow.bootstrap import append_dataset
    from dataflow.generator import GeneratorConfig, MockGenerator
    from storage import Event, open_store

    gen = MockGenerator(GeneratorConfig.from_settings(Settings(db=db, users=users)))
    with open_store(db) as store:
        t0 = time.perf_counter()
        if via == "columns":
            n = append_dataset(store, gen).events
        else:
            n = 0
            for b in gen.dataset_columns(50_000):
                store.append([Event(eid, t, ts, u, tg, from_json(p), b.version) for eid, t, u, tg, ts, p in
                              zip(b.event_id, b.type, b.user, b.target, b.ts, b.payload)])
                n += len(b)
        seconds = time.perf_counter() - t0
        if store.count() != n or store.last_seq() != n:
            raise RuntimeError(f"{store.count()} events in the log for {n} generated")
    return {"events": n, "rate": n / seconds, "span_s": seconds, "wall_s": seconds}


def _pg_database(admin_url: str) -> str:
    from storage.pg_db import create_database

    return create_database(admin_url, f"bench_{uuid.uuid4().hex[:8]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=5_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--pg", help="a PostgreSQL database URL to create the bench databases beside (default: a "
                    "throw-away server)")
    ap.add_argument("--phases", default="flow,generate", help="which of flow, generate to run")
    args = ap.parse_args(argv)
    phases = set(args.phases.split(","))
    server: Any = None
    admin = args.pg
    if admin is None:
        from pg_server import PostgresServer, find_bin_dir

        bin_dir = find_bin_dir()
        if bin_dir is None:
            print("no PostgreSQL server binaries (Debian's postgresql package); give --pg URL", file=sys.stderr)
            return 2
        server = PostgresServer(bin_dir, durable=True)
        server.start()
        admin = server.url()
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ups-cluster-bench-") as tmp:
            root = Path(tmp)
            stores = {"sqlite": lambda name: str(root / f"{name}.db"), "pg": lambda name: _pg_database(admin)}
            for procs in (1, 2) if "flow" in phases else ():
                for kind, make in stores.items():
                    name = f"{kind}-{procs}p"
                    db = make(name)
                    results[name] = run_flow(db, root / f"{name}.state", args.events, args.users, args.batch, procs)
                    _print(name, results[name])
                    if procs == 1:
                        results[f"replay-{kind}"] = run_replay(db, root / f"{name}.state", args.users, args.batch)
                        _print(f"replay-{kind}", results[f"replay-{kind}"])
            if "generate" in phases:
                for name, kind, via in (("generate-sqlite", "sqlite", "columns"), ("generate-pg", "pg", "columns"),
                                        ("generate-pg-events", "pg", "events")):
                    results[name] = run_generate(stores[kind](name), args.users, via)
                    _print(name, results[name])
    finally:
        if server is not None:
            server.destroy()
    for baseline, group in (("sqlite-1p", ("sqlite-", "pg-")), ("generate-sqlite", ("generate-",))):
        if baseline in results:
            base = results[baseline]["rate"]
            print(f"against {baseline} ({base:,.0f} events/s): " + ", ".join(
                f"{k} {v['rate'] / base:.2f}x" for k, v in results.items() if k.startswith(group)))
    return 0


def _print(name: str, r: dict[str, float]) -> None:
    print(f"{name:<19} {r['events']:>9,.0f} events  {r['rate']:>9,.0f} events/s  "
          f"(appends over {r['span_s']:.1f} s; run {r['wall_s']:.1f} s)", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
