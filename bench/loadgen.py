"""The HTTP load generator of bench/api.py, in a process of its own.

The orchestrator (bench/api.py) samples CPU, scrapes ``/metrics`` and reads the store between phases;
none of that may delay a request, so the requests go out from this separate process, on its own
event loop (uvloop when installed, as the server uses). A phase is a set of streams run together:

* ``closed``: ``concurrency`` clients, each sending its next request when the previous one answered
  (the maximum throughput); latency is measured from the send;
* ``open``: requests on a fixed schedule, ``rate`` per second, whatever the answers. Latency is measured
  from the *intended* send time, so a server (or a generator) that falls behind is charged for the
  requests waiting to go out (no coordinated omission); how late the generator itself sent each
  request is reported as ``send lag``, to tell the generator's delay from the server's.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import multiprocessing.connection
import time
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import numpy as np


@dataclass
class Stream:
    name: str
    base: str
    paths: list[str]
    mode: Literal["closed", "open"]
    seconds: float
    max_requests: int = 1_000_000
    concurrency: int = 8
    rate: float = 0.0
    #: open streams only: wait before the first request (lets the other streams of the phase start)
    start_after: float = 0.0


@dataclass
class StreamResult:
    name: str
    mode: str
    #: seconds, one per answered (or failed) request
    latencies: np.ndarray
    #: open streams: how late each request left the generator, seconds
    send_lags: np.ndarray
    statuses: dict[int, int]
    errors: int
    seconds: float
    #: open streams: the rate asked
    rate_asked: float = 0.0
    error_samples: list[str] = field(default_factory=list)


class _Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.error_samples: list[str] = []

    def add(self, status: int, latency: float, what: str = "") -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 400:
            self.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{status} {what}"[:300])
        self.latencies.append(latency)

    def result(self, s: Stream, seconds: float) -> StreamResult:
        return StreamResult(s.name, s.mode, np.array(self.latencies), np.array(self.lags), self.statuses,
                            self.errors, seconds, s.rate if s.mode == "open" else 0.0, self.error_samples)


async def _one(session: aiohttp.ClientSession, url: str, rec: _Recorder, since: float) -> None:
    what = ""
    try:
        async with session.get(url) as r:
            body = await r.read()
            status = r.status
            if status >= 400:
                what = f"{url}: {body[:200]!r}"
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
        status, what = 599, f"{url}: {type(err).__name__}: {err}"
    rec.add(status, time.perf_counter() - since, what)


async def _closed(s: Stream, session: aiohttp.ClientSession, rec: _Recorder) -> None:
    deadline = time.perf_counter() + s.seconds
    counter = iter(range(s.max_requests))

    async def client() -> None:
        for i in counter:
            if time.perf_counter() > deadline:
                return
            await _one(session, s.base + s.paths[i % len(s.paths)], rec, time.perf_counter())

    await asyncio.gather(*(client() for _ in range(s.concurrency)))


async def _open(s: Stream, session: aiohttp.ClientSession, rec: _Recorder) -> None:
    n = min(s.max_requests, int(s.rate * s.seconds))
    t0 = time.perf_counter() + s.start_after
    tasks = []
    for i in range(n):
        intended = t0 + i / s.rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        rec.lags.append(max(0.0, time.perf_counter() - intended))
        tasks.append(asyncio.create_task(_one(session, s.base + s.paths[i % len(s.paths)], rec, intended)))
    await asyncio.gather(*tasks)


async def _stream(s: Stream) -> StreamResult:
    rec = _Recorder()
    # one connection pool per stream: the /health poller never queues behind the explanations
    limit = s.concurrency if s.mode == "closed" else 256
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=limit)) as session:
        t0 = time.perf_counter()
        await (_closed if s.mode == "closed" else _open)(s, session, rec)
        return rec.result(s, time.perf_counter() - t0)


async def _phase(streams: list[Stream]) -> list[StreamResult]:
    return list(await asyncio.gather(*(_stream(s) for s in streams)))


def _serve(conn: multiprocessing.connection.Connection) -> None:
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # plain asyncio works too, with a little more overhead per request
        run = asyncio.run
    while True:
        streams = conn.recv()
        if streams is None:
            return
        # no collections during a phase (it is bounded; its garbage is collected after): a collector
        # pause in the generator would show as a late send, charged to the server by the open loop
        gc.collect()
        gc.disable()
        try:
            results = run(_phase(streams))
        finally:
            gc.enable()
        conn.send(results)


class LoadGenerator:
    """``run(streams)`` runs one phase in the generator process and returns a result per stream."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), name="bench-loadgen", daemon=True)
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def run(self, streams: list[Stream]) -> list[StreamResult]:
        self._conn.send(streams)
        out: list[StreamResult] = self._conn.recv()
        return out

    def close(self) -> None:
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
