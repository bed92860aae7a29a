"""API benchmark: a load generator on 127.0.0.1 against ``ups up`` (100 000 users, live ingestion at
2 000 events/s by default). Every phase is bounded in requests and in time.

Phases, each printing requests/s, p50/p99/p99.9/max latency and errors:

* a bare ASGI app under uvicorn (bench/floor.py) at the target rate: the floor of this machine, the
  generator and the HTTP server, without Litestar or UPS (the rest of the system keeps running);
* ``/health`` closed loop and at the target rate: the lightest route of the server, measured in the same run;
* ``/api/v1/user/{id}``: closed loop (max throughput), then open loop at the target rate (500/s)
  — target: 500 requests/s with p99 <= 20 ms and no errors;
* ``/api/v1/recommendation/{id}`` closed loop;
* ``/api/v1/explain/{id}`` cold (users never explained) and warm (the same users again);
* ``/health`` at 100/s while eight explanations run at once — target p99 <= 50 ms.

How the figures are kept honest:

* the requests go out from a process of their own (bench/loadgen.py), never the one that samples and
  scrapes, and never the server's;
* open-loop phases start once the log grows at about the ingestion rate asked (the flow's live source
  catches up in a burst after a closed-loop phase starved it);
* open-loop latency counts from the *intended* send time (a late generator or a stalled server is
  charged, no coordinated omission); the generator's own lateness is shown as ``send lag``;
* per phase, where the two cores went (CPU % of one core: API process, dataflow, the dataflow's child
  processes (its log writer and refresher), the API's worker processes, the generator, everything else
  on the machine), the ingestion rate the store actually saw during the phase, and the server's own p99 from its ``/metrics`` latency histogram (time inside
  the app, by bucket), which tells the server's share of the tail from the rest (scheduling, client);
* per phase, event -> embedding: from the store, each interaction (or user attribute) event appended
  during the phase, from its append (``recorded_at``) to the write of its user's embedding row that
  reflects it (``updated_at``, the row's seq at least the event's), read a few seconds after the phase;
  only users with no later such event count (each write replaces the row, so only then is the stored
  row the one that covered the event); events not embedded by then count at their age, a lower bound
  — target p99 <= 1 s at 5 000 events/s.

    python -m bench.api [--users 100000 --rate 2000 --seconds 10 --db var/bench/ups.db]

The database is kept (``--db``): a second run skips generation and the initial training.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.loadgen import LoadGenerator, Stream, StreamResult
from scoring.graph_schema import ATTRIBUTE_EVENTS, RELATIONS
from storage.embeddings import EmbeddingLags
from storage.event_store import EventStore

LATENCY_METRIC = "ups_http_request_duration_seconds"
#: events whose user node the refresher re-embeds: interactions and the user's attribute events
LAG_TYPES = tuple(RELATIONS) + tuple(t for t, node in ATTRIBUTE_EVENTS.items() if node == "user")
#: seconds after a phase before its events' embeddings are read (an event still pending then is late)
LAG_SETTLE_S = 3.0
#: the refresh keeps up once its oldest pending node has waited less than this (s)
STEADY_PENDING_S = 2.0
PHASES = ("floor", "health", "user_closed", "health_open", "user_open", "recommendation", "explain_cold", "explain_warm",
          "health_under_explain")


def _ms(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q) * 1000) if len(values) else float("nan")


# ----------------------------------------------------------------------------- what the machine did


@dataclass
class Snapshot:
    """CPU seconds per process group, the machine's busy seconds, the log's last seq, server histograms."""

    at: float
    cpu: dict[str, float]
    workers: dict[int, float]
    machine_busy: float
    last_seq: int
    histograms: dict[str, dict[float, float]]


class Observer:
    """Samples the system between phases (never during one: the generator's process sends alone)."""

    def __init__(self, base: str, db: Path, pids: dict[str, int]) -> None:
        self.base = base
        self.db = db
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}

    def _cpu(self, p: psutil.Process) -> float:
        try:
            t = p.cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return 0.0

    def _last_seq(self) -> int:
        with EventStore(self.db, readonly=True) as store:
            return store.last_seq()

    def _histograms(self) -> dict[str, dict[float, float]]:
        """route -> {bucket upper bound (s): cumulative count} of the server's latency histogram."""
        text = (_get_text(self.base + "/metrics") or "")
        out: dict[str, dict[float, float]] = {}
        for fam in text_string_to_metric_families(text):
            if fam.name != LATENCY_METRIC:
                continue
            for s in fam.samples:
                if s.name.endswith("_bucket") and s.labels.get("route") != "/metrics":
                    route = f"{s.labels.get('method')} {s.labels.get('route')}"
                    out.setdefault(route, {})[float(s.labels["le"])] = s.value
        return out

    def embedding_lag(self, a: Snapshot, b: Snapshot) -> "EmbedLag | None":
        """Event -> embedding of the events appended between the two snapshots, ``LAG_SETTLE_S`` after the
        second (None: nothing appended)."""
        if b.last_seq <= a.last_seq:
            return None
        time.sleep(max(0.0, LAG_SETTLE_S - (time.perf_counter() - b.at)))
        with EventStore(self.db, readonly=True) as store:
            lags = store.embeddings.user_lags(a.last_seq, b.last_seq, LAG_TYPES)
        return EmbedLag.of(lags, time.time())

    def wait_ingestion(self, rate: float, timeout: float = 30.0) -> float:
        """Wait until the log grows at about ``rate`` (the flow's live source catches up after a phase that
        starved it, appending faster for a while): open-loop phases measure under the load asked."""
        deadline = time.monotonic() + timeout
        seen = float("nan")
        while time.monotonic() < deadline:
            s0, t0 = self._last_seq(), time.perf_counter()
            time.sleep(2.0)
            seen = (self._last_seq() - s0) / (time.perf_counter() - t0)
            if 0.8 * rate <= seen <= 1.25 * rate:
                return seen
        print(f"    (ingestion at {seen:,.0f} events/s, not yet steady at {rate:g}; measuring anyway)", flush=True)
        return seen

    def snapshot(self) -> Snapshot:
        workers: dict[int, float] = {}
        flow_children = 0.0  # the log writer and the refresher process
        try:
            for c in self.procs["api"].children(recursive=True):
                workers[c.pid] = self._cpu(c)
            flow_children = sum(self._cpu(c) for c in self.procs["dataflow"].children(recursive=True))
        except psutil.Error:
            pass
        t = psutil.cpu_times()
        busy = float(sum(t) - t.idle - getattr(t, "iowait", 0.0))
        cpu = {n: self._cpu(p) for n, p in self.procs.items()} | {"dataflow children": flow_children}
        return Snapshot(time.perf_counter(), cpu, workers, busy, self._last_seq(), self._histograms())


@dataclass
class Usage:
    """What happened on the machine during one phase."""

    seconds: float
    cpu_pct: dict[str, float]
    events_per_s: float
    server_p99_ms: dict[str, float]
    server_requests: dict[str, int]

    def line(self) -> str:
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in self.cpu_pct.items())
        server = "; ".join(f"{r} <= {v:g} ms ({self.server_requests[r]:,d} req)"
                           for r, v in self.server_p99_ms.items())
        return (f"    CPU % of one core: {cpu} (machine: {psutil.cpu_count()} cores); "
                f"ingestion {self.events_per_s:,.0f} events/s\n    server-side p99 (app time, by bucket): {server}")


@dataclass
class EmbedLag:
    """Event append -> embedding row written, of the events of one phase (see ``Embeddings.user_lags``)."""

    seconds: np.ndarray  # embedded events' lags, then the pending ones' ages (a lower bound of their lag)
    pending: int

    @classmethod
    def of(cls, lags: EmbeddingLags, now: float) -> "EmbedLag":
        ages = lags.pending_ages(now)
        return cls(np.concatenate([lags.seconds, ages]), len(ages))

    def pct(self, q: float) -> float:
        return _ms(self.seconds, q) / 1000

    def line(self) -> str:
        return (f"    event -> embedding ({len(self.seconds):,d} events, users with one event since): p50 "
                f"{self.pct(50):.2f} s, p99 {self.pct(99):.2f} s, max {self.pct(100):.2f} s; {self.pending:,d} not "
                f"embedded {LAG_SETTLE_S:g} s after the phase (counted at their age)")

    def doc(self) -> dict[str, Any]:
        return {"events": len(self.seconds), "p50_s": round(self.pct(50), 3), "p99_s": round(self.pct(99), 3),
                "max_s": round(self.pct(100), 3), "pending": self.pending}


def _bucket_p99(before: dict[float, float], after: dict[float, float]) -> tuple[float, int]:
    deltas = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = deltas[-1][1] if deltas else 0.0
    for le, cum in deltas:
        if cum >= 0.99 * total:
            return le * 1000, int(total)
    return float("inf"), int(total)


def usage(a: Snapshot, b: Snapshot) -> Usage:
    dt = b.at - a.at
    cpu = {n: 100 * (b.cpu[n] - a.cpu.get(n, 0.0)) / dt for n in b.cpu}
    cpu["api workers"] = 100 * sum(v - a.workers.get(pid, 0.0) for pid, v in b.workers.items()) / dt
    cpu["rest of machine"] = max(0.0, 100 * (b.machine_busy - a.machine_busy) / dt - sum(cpu.values()))
    p99: dict[str, float] = {}
    counts: dict[str, int] = {}
    for route, hist in b.histograms.items():
        v, n = _bucket_p99(a.histograms.get(route, {}), hist)
        if n:
            p99[route], counts[route] = v, n
    return Usage(dt, cpu, (b.last_seq - a.last_seq) / dt, p99, counts)


# ----------------------------------------------------------------------------- results


@dataclass
class PhaseResult:
    stream: StreamResult
    usage: Usage | None = None
    lag: EmbedLag | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        s = self.stream
        return len(s.latencies) / s.seconds if s.seconds else 0.0

    def pct(self, q: float) -> float:
        return _ms(self.stream.latencies, q)

    @property
    def errors(self) -> int:
        return self.stream.errors

    def line(self) -> str:
        s = self.stream
        out = (f"{s.name:38s} {len(s.latencies):>7,d} req {self.rate:>8,.1f} req/s  p50 {self.pct(50):6.1f}"
               f"  p99 {self.pct(99):6.1f}  p99.9 {self.pct(99.9):6.1f}  max {self.pct(100):6.1f} ms"
               f"  errors {s.errors}")
        if s.mode == "open":
            out += f"\n    open loop, latency from the intended send time; send lag p99 {_ms(s.send_lags, 99):.1f} ms"
        for sample in s.error_samples:
            out += f"\n    error: {sample}"
        return out

    def doc(self) -> dict[str, Any]:
        s = self.stream
        d: dict[str, Any] = {
            "requests": len(s.latencies), "rate": round(self.rate, 1), "p50_ms": round(self.pct(50), 2),
            "p99_ms": round(self.pct(99), 2), "p999_ms": round(self.pct(99.9), 2), "max_ms": round(self.pct(100), 2),
            "errors": s.errors, "statuses": s.statuses, "mode": s.mode,
        }
        if s.mode == "open":
            d["rate_asked"] = s.rate_asked
            d["send_lag_p99_ms"] = round(_ms(s.send_lags, 99), 2)
        if self.usage is not None:
            d["cpu_pct"] = {k: round(v, 1) for k, v in self.usage.cpu_pct.items()}
            d["ingestion_events_per_s"] = round(self.usage.events_per_s, 1)
            d["server_p99_ms_bucket"] = self.usage.server_p99_ms
        if self.lag is not None:
            d["event_to_embedding"] = self.lag.doc()
        return d


# ----------------------------------------------------------------------------- the system under test


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_text(url: str, timeout: float = 5) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return str(r.read().decode())
    except Exception:  # noqa: BLE001 - not up yet
        return None


def _get(url: str, timeout: float = 5) -> dict[str, Any] | None:
    text = _get_text(url, timeout)
    return json.loads(text) if text else None


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ups up exited with code {proc.returncode}")
        h = _get(base + "/health")
        if h and h["dataflow"]["alive"] and h["models"]["fusion"] is not None and h["api"]["scoring"] == "ready":
            return h
        time.sleep(1)
    raise SystemExit("ups up did not become ready in time")


def wait_steady(base: str, rate: float, timeout: float) -> dict[str, Any]:
    """Measure under steady ingestion: the flow has folded its backlog and appends at about the rate
    asked, and the embedding refresh keeps up (its oldest pending node waits under ``STEADY_PENDING_S``;
    after a start the refresher first builds its graph and may warm its layer cache with a full pass)."""
    deadline = time.monotonic() + timeout
    flow: dict[str, Any] = {}
    while time.monotonic() < deadline:
        flow = (_get(base + "/health") or {}).get("dataflow", {})
        backlog, eps = flow.get("backlog"), flow.get("events_per_s") or 0
        oldest = flow.get("oldest_pending_s")
        refresh_ok = flow.get("refresh") != "running" or (oldest is not None and oldest < STEADY_PENDING_S)
        if backlog is not None and backlog < rate * 5 and eps >= 0.8 * rate and refresh_ok:
            return flow
        time.sleep(2)
    print(f"the dataflow did not reach a steady rate in time (refresh queue {flow.get('refresh_queue')}, oldest "
          f"pending {flow.get('oldest_pending_s')} s); measuring anyway", flush=True)
    return flow


def _stop(base: str, up: subprocess.Popen[bytes]) -> None:
    """Shut down through the API; Ctrl-C (SIGINT) to ``ups up`` if that fails."""
    try:
        urllib.request.urlopen(urllib.request.Request(base + "/api/v1/operations/shutdown", method="POST"), timeout=10)
    except Exception:  # noqa: BLE001
        up.send_signal(signal.SIGINT)
    try:
        up.wait(timeout=90)
    except subprocess.TimeoutExpired:
        up.kill()
        up.wait()


@contextmanager
def floor_server() -> Iterator[str]:
    """bench/floor.py on a free port: the latency floor of the machine, the generator and uvicorn."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.floor", "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while _get_text(base + "/") is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the floor server did not start")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


# ----------------------------------------------------------------------------- the run


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, default=Path("var/bench/ups.db"))
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=2000.0, help="live ingestion, events/s")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    ap.add_argument("--target-rate", type=float, default=500.0, help="open-loop rate on /api/v1/user")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--explain-users", type=int, default=24, help="distinct users explained cold, then warm")
    ap.add_argument("--ready-timeout", type=float, default=3600.0, help="for generation and initial training")
    ap.add_argument("--steady-timeout", type=float, default=300.0,
                    help="for the flow's backlog and the refresher's warm-up after the start (s)")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help=f"comma-separated subset of {','.join(PHASES)} (default: all)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    if not phases <= set(PHASES):
        ap.error(f"unknown phases: {', '.join(sorted(phases - set(PHASES)))}; choose from {', '.join(PHASES)}")
    return args


class _Phases:
    """The phases of one run against a started server: each a set of streams, measured with the server's
    CPU and memory and the live ingestion meanwhile."""

    def __init__(self, args: argparse.Namespace, base: str, gen: LoadGenerator, observer: Observer) -> None:
        self.args, self.base, self.gen, self.observer = args, base, gen, observer
        self.phases = set(args.phases.split(","))
        self.results: dict[str, PhaseResult] = {}

    def run(self, key: str, *streams: Stream) -> list[PhaseResult | None]:
        if key not in self.phases:
            return [None] * len(streams)
        rate = self.args.rate
        if any(st.mode == "open" for st in streams):
            self.observer.wait_ingestion(rate)
        before = self.observer.snapshot()
        out = [PhaseResult(r) for r in self.gen.run(list(streams))]
        after = self.observer.snapshot()
        used = usage(before, after)
        lag = self.observer.embedding_lag(before, after)
        for i, r in enumerate(out):
            r.usage, r.lag = used, lag
            self.results[key if i == 0 else f"{key}_{i}"] = r
            print(r.line(), flush=True)
        print(used.line(), flush=True)
        if lag is not None:
            print(lag.line(), flush=True)
        if used.events_per_s < 0.9 * rate and used.seconds >= 2:  # the flow appends in batches
            print(f"    NOTE: ingestion ran at {used.events_per_s:,.0f} events/s in this phase, below the "
                  f"{rate:g} asked", flush=True)
        return list(out)

    def closed(self, name: str, paths: list[str], seconds: float | None = None, max_requests: int = 100_000,
               concurrency: int | None = None) -> Stream:
        return Stream(name, self.base, paths, "closed", self.args.seconds if seconds is None else seconds,
                      max_requests, concurrency=self.args.concurrency if concurrency is None else concurrency)

    def open_(self, name: str, paths: list[str], rate: float, seconds: float | None = None,
              start_after: float = 0.0) -> Stream:
        return Stream(name, self.base, paths, "open", self.args.seconds if seconds is None else seconds, rate=rate,
                      start_after=start_after)

    def measure(self, users: list[str]) -> tuple[PhaseResult | None, PhaseResult | None]:
        """Every phase asked for; the target phases' results (/api/v1/user open loop, /health under
        explanations)."""
        args, run, closed, open_ = self.args, self.run, self.closed, self.open_
        user_paths = [f"/api/v1/user/{u}" for u in users]
        rate = args.target_rate
        if "floor" in self.phases:
            with floor_server() as floor_base:
                self.gen.run([Stream("warm-up", floor_base, ["/"], "closed", 3, 300, concurrency=4)])
                run("floor", Stream(f"floor: bare ASGI app at {rate:g}/s", floor_base, ["/"], "open", args.seconds,
                                    rate=rate))
        run("health", closed("/health closed loop (baseline)", ["/health"]))
        run("user_closed", closed("/api/v1/user closed loop", user_paths))
        run("health_open", open_(f"/health at {rate:g}/s (baseline)", ["/health"], rate))
        (u,) = run("user_open", open_(f"/api/v1/user at {rate:g}/s", user_paths, rate))
        run("recommendation", closed("/api/v1/recommendation closed loop",
                                     [f"/api/v1/recommendation/{u}" for u in users]))
        explain_paths = [f"/api/v1/explain/{u}" for u in users[: args.explain_users]]
        run("explain_cold", closed("/api/v1/explain cold", explain_paths, 600, len(explain_paths), 2))
        run("explain_warm", closed("/api/v1/explain warm", explain_paths, 60, len(explain_paths) * 4, 2))
        h, _ = run("health_under_explain",
                   open_("/health at 100/s, 8 explanations running", ["/health"], 100, args.seconds * 2, 0.5),
                   closed("explain, 8 at once (background)",
                          [f"/api/v1/explain/{x}" for x in users[args.explain_users:]], args.seconds * 2 + 0.5,
                          concurrency=8))
        return u, h


def _report(args: argparse.Namespace, results: dict[str, PhaseResult], u: PhaseResult | None,
            h: PhaseResult | None) -> None:
    """The targets' verdicts and the baselines; the figures as JSON with ``--json``."""
    rate = args.target_rate
    print()
    if u is not None:
        ingest = u.usage.events_per_s if u.usage else float("nan")
        ok_user = u.rate >= 0.95 * rate and u.pct(99) <= 20 and u.errors == 0
        print(f"target /api/v1/user: {rate:g} req/s, p99 <= 20 ms, no errors -> {u.rate:.0f} req/s, "
              f"p99 {u.pct(99):.1f} ms, {u.errors} errors: {'OK' if ok_user else 'BELOW TARGET'} "
              f"(live ingestion meanwhile {ingest:,.0f} events/s, asked {args.rate:g})")
        if ingest < 0.9 * args.rate:
            print(f"NOTE: ingestion ran at {ingest:,.0f} events/s during the target phase, below the "
                  f"{args.rate:g} asked: the figures are not under the stated load")
        if u.lag is not None:
            ok_lag = u.lag.pct(99) <= 1.0
            print(f"target event -> embedding p99 <= 1 s (during that phase, {ingest:,.0f} events/s) -> "
                  f"p99 {u.lag.pct(99):.2f} s over {len(u.lag.seconds):,d} events, {u.lag.pending:,d} not embedded "
                  f"after {LAG_SETTLE_S:g} s: {'OK' if ok_lag else 'BELOW TARGET'}")
    if h is not None:
        ok_health = h.pct(99) <= 50 and h.errors == 0
        print(f"target /health p99 <= 50 ms while 8 explanations run -> {h.pct(99):.1f} ms: "
              f"{'OK' if ok_health else 'BELOW TARGET'}")
    for key in ("health", "health_open"):
        if key in results:
            r = results[key]
            print(f"baseline {r.stream.name}: {r.rate:.0f} req/s, p99 {r.pct(99):.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "load_average": os.getloadavg(),
                                         **{k: r.doc() for k, r in results.items()}}, indent=2))


def main() -> None:
    args = _parse_args()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "UPS_DEVICE": os.environ.get("UPS_DEVICE", "auto")}
    cmd = [sys.executable, "-m", "ups", "up", "--db", str(args.db), "--users", str(args.users),
           "--live-rate", str(args.rate), "--port", str(port)]
    print("starting:", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    up = subprocess.Popen(cmd, env=env, start_new_session=True)
    gen = LoadGenerator()
    try:
        health = wait_ready(base, up, args.ready_timeout)
        print(f"ready after {time.monotonic() - t0:.0f} s; dataflow {health['dataflow']['ingestion']}, "
              f"models {health['models']}", flush=True)
        with EventStore(args.db, readonly=True) as store:
            users = store.profiles.sample_ids(5000, seed=1)
        random.Random(2).shuffle(users)
        t1 = time.monotonic()
        flow = wait_steady(base, args.rate, args.steady_timeout)
        print(f"steady after {time.monotonic() - t1:.0f} s more: live ingestion {flow.get('events_per_s')} events/s "
              f"(asked {args.rate:g}), backlog {flow.get('backlog')} events, refresh queue {flow.get('refresh_queue')}, "
              f"oldest pending {flow.get('oldest_pending_s')} s", flush=True)
        health = _get(base + "/health") or health
        observer = Observer(base, args.db, {"api": health["api"]["pid"], "dataflow": health["dataflow"]["pid"],
                                            "generator": gen.pid})
        gen.run([Stream("warm-up", base, [p + u for p in ("/api/v1/user/", "/api/v1/recommendation/")
                                          for u in users[-50:]], "closed", 10, 400, concurrency=4)])
        phases = _Phases(args, base, gen, observer)
        u, h = phases.measure(users)
        _report(args, phases.results, u, h)
    finally:
        gen.close()
        _stop(base, up)


if __name__ == "__main__":
    main()
