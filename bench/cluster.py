"""Cluster benchmark: the live flow into PostgreSQL against SQLite, with one flow process and with two
(a Bytewax cluster, ``-i/-a``, on this machine), and the replay rate from each; one run, the same mock
stream for every phase.

* sqlite-1p  ``ups dataflow --max-events N`` into a SQLite file: the embedded default, the baseline
* pg-1p      the same into a PostgreSQL database
* sqlite-2p  two ``ups dataflow`` processes (``-i 0|1 -a …``, one worker each) into one SQLite file
* pg-2p      the same two processes into one PostgreSQL database
* replay     ``ups replay`` of the log that sqlite-1p and pg-1p wrote (the profiles rebuilt from nothing)

A flow's rate is its events over the span their appends took in the log (the first live event's
``recorded_at`` to the last one's): start-up (imports, a cluster's handshake) is paid once per start and
left out; the wall time of the whole run is printed beside it. Every run checks its count: each event in
the log once. Without ``--pg`` a throw-away PostgreSQL server is started from Debian's ``postgresql``
binaries (``tests/pg_server.py``), with fsync on, on this machine.

    python -m bench.cluster [--events 100000] [--users 5000] [--batch 2000] [--pg postgresql://…/postgres]
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


def _pg_database(admin_url: str) -> str:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=5_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--pg", help="a PostgreSQL database URL to create the bench databases beside (default: a "
                    "throw-away server)")
    args = ap.parse_args(argv)
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
            for procs in (1, 2):
                for kind, make in stores.items():
                    name = f"{kind}-{procs}p"
                    db = make(name)
                    results[name] = run_flow(db, root / f"{name}.state", args.events, args.users, args.batch, procs)
                    _print(name, results[name])
                    if procs == 1:
                        results[f"replay-{kind}"] = run_replay(db, root / f"{name}.state", args.users, args.batch)
                        _print(f"replay-{kind}", results[f"replay-{kind}"])
    finally:
        if server is not None:
            server.destroy()
    base = results["sqlite-1p"]["rate"]
    print(f"\nagainst sqlite-1p ({base:,.0f} events/s): " + ", ".join(
        f"{k} {v['rate'] / base:.2f}x" for k, v in results.items() if not k.startswith("replay")))
    return 0


def _print(name: str, r: dict[str, float]) -> None:
    print(f"{name:<15} {r['events']:>9,.0f} events  {r['rate']:>9,.0f} events/s  "
          f"(appends over {r['span_s']:.1f} s; run {r['wall_s']:.1f} s)", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
