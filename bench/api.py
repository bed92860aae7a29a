"""API benchmark: a load generator on 127.0.0.1 against ``ups up`` (100 000 users, live ingestion at
2 000 events/s by default). Every phase is bounded in requests and in time.

Phases, each printing requests/s, p50/p99 latency and errors:

* ``/health`` closed loop and at the target rate: the baseline of this machine and server (the lightest
  route), measured in the same run;
* ``/api/v1/user/{id}``: closed loop (max throughput), then open loop at the target rate (500/s)
  — target: 500 requests/s with p99 <= 20 ms and no errors;
* ``/api/v1/recommendation/{id}`` closed loop;
* ``/api/v1/explain/{id}`` cold (users never explained) and warm (the same users again);
* ``/health`` p99 while eight explanations run at once — target p99 <= 50 ms.

    python -m bench.api [--users 100000 --rate 2000 --seconds 10 --db var/bench/ups.db]

The database is kept (``--db``): a second run skips generation and the initial training.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from storage.db import connect
from storage.projections import Profiles


@dataclass
class PhaseResult:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, status: int, latency: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 400:
            self.errors += 1
        self.latencies.append(latency)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")

    def line(self) -> str:
        return (f"{self.name:38s} {len(self.latencies):>7,d} req {self.rate:>8,.1f} req/s  p50 {self.pct(50):7.1f} ms"
                f"  p99 {self.pct(99):7.1f} ms  errors {self.errors}")

    def doc(self) -> dict[str, Any]:
        return {"requests": len(self.latencies), "rate": round(self.rate, 1), "p50_ms": round(self.pct(50), 2),
                "p99_ms": round(self.pct(99), 2), "errors": self.errors, "statuses": self.statuses}


async def _one(session: aiohttp.ClientSession, url: str, res: PhaseResult) -> None:
    t = time.perf_counter()
    try:
        async with session.get(url) as r:
            await r.read()
            status = r.status
    except (aiohttp.ClientError, asyncio.TimeoutError):
        status = 599
    res.add(status, time.perf_counter() - t)


async def closed_loop(base: str, name: str, paths: list[str], concurrency: int, seconds: float,
                      max_requests: int) -> PhaseResult:
    """``concurrency`` clients, each sending its next request when the previous answered."""
    res = PhaseResult(name)
    deadline = time.perf_counter() + seconds
    counter = iter(range(max_requests))
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        async def worker() -> None:
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                await _one(s, base + paths[i % len(paths)], res)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        res.seconds = time.perf_counter() - t0
    return res


async def open_loop(base: str, name: str, paths: list[str], rate: float, seconds: float) -> PhaseResult:
    """Requests sent on a fixed schedule whatever the answers (no coordinated omission)."""
    res = PhaseResult(name)
    n = int(rate * seconds)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=256)) as s:
        t0 = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(s, base + paths[i % len(paths)], res)))
        await asyncio.gather(*tasks)
        res.seconds = time.perf_counter() - t0
    return res


async def health_under_explanations(base: str, users: list[str], seconds: float) -> tuple[PhaseResult, PhaseResult]:
    """Eight explanations at once, all the time, while /health is polled every 10 ms."""
    explain = PhaseResult("explain (8 at once, background)")
    health = PhaseResult("/health while 8 explanations run")
    deadline = time.perf_counter() + seconds
    queue = iter(users)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=16)) as s:
        async def explainer() -> None:
            for uid in queue:
                if time.perf_counter() > deadline:
                    return
                await _one(s, f"{base}/api/v1/explain/{uid}", explain)

        async def poller() -> None:
            await asyncio.sleep(0.5)  # let the explanations start
            while time.perf_counter() < deadline:
                await _one(s, f"{base}/health", health)
                await asyncio.sleep(0.01)

        t0 = time.perf_counter()
        await asyncio.gather(poller(), *(explainer() for _ in range(8)))
        explain.seconds = health.seconds = time.perf_counter() - t0
    return health, explain


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 5) -> dict[str, Any] | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())
    except Exception:  # noqa: BLE001 - not up yet
        return None


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ups up exited with code {proc.returncode}")
        h = _get(base + "/health")
        if h and h["dataflow"]["alive"] and h["models"]["fusion"] is not None:
            return h
        time.sleep(1)
    raise SystemExit("ups up did not become ready in time")


def wait_steady(base: str, rate: float, timeout: float) -> dict[str, Any]:
    """Measure under steady ingestion: the flow has folded its backlog and appends at about the rate asked."""
    deadline = time.monotonic() + timeout
    flow: dict[str, Any] = {}
    while time.monotonic() < deadline:
        flow = (_get(base + "/health") or {}).get("dataflow", {})
        backlog, eps = flow.get("backlog"), flow.get("events_per_s") or 0
        if backlog is not None and backlog < rate * 5 and eps >= 0.8 * rate:
            return flow
        time.sleep(2)
    print("the dataflow did not reach a steady rate in time; measuring anyway", flush=True)
    return flow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, default=Path("var/bench/ups.db"))
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=2000.0, help="live ingestion, events/s")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each closed-loop phase")
    ap.add_argument("--target-rate", type=float, default=500.0, help="open-loop rate on /api/v1/user")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--explain-users", type=int, default=24, help="distinct users explained cold, then warm")
    ap.add_argument("--ready-timeout", type=float, default=3600.0, help="for generation and initial training")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "UPS_DEVICE": os.environ.get("UPS_DEVICE", "auto")}
    cmd = [sys.executable, "-m", "ups", "up", "--db", str(args.db), "--users", str(args.users),
           "--live-rate", str(args.rate), "--port", str(port)]
    print("starting:", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    up = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        health = wait_ready(base, up, args.ready_timeout)
        print(f"ready after {time.monotonic() - t0:.0f} s; dataflow {health['dataflow']['ingestion']}, "
              f"models {health['models']}", flush=True)
        conn = connect(args.db)
        users = Profiles(conn).sample_ids(5000, seed=1)
        conn.close()
        random.Random(2).shuffle(users)
        flow = wait_steady(base, args.rate, 300)
        print(f"live ingestion: {flow.get('events_per_s')} events/s (asked {args.rate:g}), "
              f"backlog {flow.get('backlog')} events", flush=True)

        results: dict[str, PhaseResult] = {}
        for path in ("/api/v1/user/", "/api/v1/recommendation/"):  # warm-up: not measured
            asyncio.run(closed_loop(base, "warm-up", [path + u for u in users[-50:]], 4, 10, 200))

        def run(key: str, coro: Any) -> PhaseResult:
            r = asyncio.run(coro)
            results[key] = r
            print(r.line(), flush=True)
            return r

        user_paths = [f"/api/v1/user/{u}" for u in users]
        run("health", closed_loop(base, "/health (baseline)", ["/health"], args.concurrency, args.seconds, 100_000))
        run("user_closed", closed_loop(base, "/api/v1/user closed loop", user_paths, args.concurrency, args.seconds,
                                       100_000))
        run("health_open", open_loop(base, f"/health at {args.target_rate:g}/s (baseline)", ["/health"],
                                     args.target_rate, args.seconds))
        run("user_open", open_loop(base, f"/api/v1/user at {args.target_rate:g}/s", user_paths, args.target_rate,
                                   args.seconds))
        run("recommendation", closed_loop(base, "/api/v1/recommendation closed loop",
                                          [f"/api/v1/recommendation/{u}" for u in users], args.concurrency,
                                          args.seconds, 100_000))
        explain_users = users[: args.explain_users]
        explain_paths = [f"/api/v1/explain/{u}" for u in explain_users]
        run("explain_cold", closed_loop(base, "/api/v1/explain cold", explain_paths, 2, 600, len(explain_paths)))
        run("explain_warm", closed_loop(base, "/api/v1/explain warm", explain_paths, 2, 60, len(explain_paths) * 4))
        h, e = asyncio.run(health_under_explanations(base, users[args.explain_users:], args.seconds * 2))
        results["health_under_explain"], results["explain_background"] = h, e
        print(e.line(), flush=True)
        print(h.line(), flush=True)

        u = results["user_open"]
        ok_user = u.rate >= 0.95 * args.target_rate and u.pct(99) <= 20 and u.errors == 0
        ok_health = h.pct(99) <= 50 and h.errors == 0
        print(f"\ntarget /api/v1/user: {args.target_rate:g} req/s, p99 <= 20 ms, no errors -> "
              f"{u.rate:.0f} req/s, p99 {u.pct(99):.1f} ms, {u.errors} errors: {'OK' if ok_user else 'BELOW TARGET'}")
        print(f"target /health p99 <= 50 ms while 8 explanations run -> {h.pct(99):.1f} ms: "
              f"{'OK' if ok_health else 'BELOW TARGET'}")
        print(f"baseline /health: closed loop {results['health'].rate:.0f} req/s, p99 {results['health'].pct(99):.1f} ms;"
              f" at {args.target_rate:g}/s p99 {results['health_open'].pct(99):.1f} ms")
        if args.json:
            args.json.write_text(json.dumps({k: r.doc() for k, r in results.items()}, indent=2))
    finally:
        _stop(base, up)


def _stop(base: str, up: subprocess.Popen[bytes]) -> None:
    """Shut down through the API; Ctrl-C (SIGINT) to ``ups up`` if that fails."""
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(base + "/api/v1/operations/shutdown", method="POST"), timeout=10)
    except Exception:  # noqa: BLE001
        up.send_signal(signal.SIGINT)
    try:
        up.wait(timeout=90)
    except subprocess.TimeoutExpired:
        up.kill()
        up.wait()


if __name__ == "__main__":
    main()
