"""Process resources for ``/api/v1/operations/metrics`` and the operations stream's ``metrics`` event:
CPU share, memory (RSS) and threads of the API process, its worker processes and the dataflow, GPU
memory when CUDA is in use, and the ingestion/refresh/training figures beside them.

psutil measures a process's CPU share between two calls on the *same* ``Process`` object (a fresh one
always says 0 %), so the :class:`ProcessMeter` (one per app, in ``AppContext``) keeps one object per
pid, and primes a pid it sees for the first time with one short window, so even the first reading is a
real figure. It reads a pid at most every ``min_interval`` seconds and hands the last reading to callers in
between, so several readers (the endpoint, each stream client) share one measuring window instead of
shrinking each other's. A process that is gone, a zombie or not readable is left out, never an error.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable

from typing_extensions import TypedDict

import psutil

from .status import dataflow_state

if TYPE_CHECKING:
    from .context import AppContext

#: what psutil raises for a process that went away, became a zombie, or is not ours to read
GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


#: the measuring window of a pid's first reading (paid once per process, by the reader that first asks)
FIRST_WINDOW_S = 0.1


class ProcessMeter:
    def __init__(self, min_interval: float) -> None:
        self.min_interval = min_interval
        self._procs: dict[int, psutil.Process] = {}
        self._last: dict[int, tuple[float, dict[str, Any]]] = {}  # pid -> (monotonic time, figures)
        self._lock = threading.Lock()  # handlers run in worker threads; the stream on the event loop
        psutil.cpu_percent(interval=None)  # the machine's share likewise starts its window here

    def prime(self, pids: Iterable[int]) -> None:
        """Start the measuring window of each pid not measured yet, then wait one short window (once for
        all of them): the readings that follow are real figures, not a blank."""
        fresh = False
        with self._lock:
            for pid in pids:
                known = self._procs.get(pid)
                if known is not None and known.is_running():  # is_running also notices a reused pid
                    continue
                try:
                    proc = psutil.Process(pid)
                    proc.cpu_percent(interval=None)
                except GONE:
                    continue
                self._procs[pid] = proc
                fresh = True
        if fresh:
            time.sleep(FIRST_WINDOW_S)

    def figures(self, pid: int) -> dict[str, Any] | None:
        """pid, name, cpu_percent (since the last reading; a first one over a short window), rss_bytes,
        threads; None when the process is gone or unreadable."""
        self.prime([pid])
        with self._lock:
            now = time.monotonic()
            last = self._last.get(pid)
            try:
                if last is not None and now - last[0] < self.min_interval:
                    # the window's reading, unless the process died since: a zombie is left out at once
                    self._check_alive(pid)
                    return last[1]
                doc = self._read(pid)
            except GONE:
                self._procs.pop(pid, None)
                self._last.pop(pid, None)
                return None
            self._last[pid] = (now, doc)
            return doc

    def _check_alive(self, pid: int) -> None:
        """Raise a GONE error unless ``pid`` is a live process (not exited, not a zombie)."""
        proc = self._procs.get(pid)
        if proc is None or proc.status() == psutil.STATUS_ZOMBIE:
            raise psutil.ZombieProcess(pid)

    def _read(self, pid: int) -> dict[str, Any]:
        proc = self._procs.get(pid)
        if proc is None:  # forgotten by another reader since it was primed
            raise psutil.NoSuchProcess(pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                raise psutil.ZombieProcess(pid)
            return {
                "pid": pid,
                "name": proc.name(),
                "cpu_percent": proc.cpu_percent(interval=None),
                "rss_bytes": proc.memory_info().rss,
                "threads": proc.num_threads(),
            }

    def children(self, pid: int) -> list[dict[str, Any]]:
        """Figures of every live descendant of ``pid`` (explanation and job workers)."""
        try:
            kids = psutil.Process(pid).children(recursive=True)
        except GONE:
            return []
        self.prime(c.pid for c in kids)
        return [f for f in (self.figures(c.pid) for c in kids) if f is not None]

    def forget_others(self, keep: set[int]) -> None:
        """Drop the objects of pids no longer asked about (workers come and go)."""
        with self._lock:
            for pid in set(self._procs) - keep:
                self._procs.pop(pid, None)
                self._last.pop(pid, None)


def gpu(flow_doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """GPU memory: of this process when it already uses torch with CUDA (no import for a metric), and
    of the dataflow as its refresh step reports it. None when neither uses a GPU."""
    out: dict[str, Any] = {}
    # while another thread (an explanation's first model load) is importing torch, the module is in
    # sys.modules but partly initialised: no ``cuda`` yet, and then no GPU of ours either
    cuda = getattr(sys.modules.get("torch"), "cuda", None)
    if cuda is not None and getattr(cuda, "is_available", lambda: False)():
        out["api"] = {
            "device": cuda.get_device_name(0),
            "allocated_bytes": int(cuda.memory_allocated(0)),
            "reserved_bytes": int(cuda.memory_reserved(0)),
        }
    if flow_doc and isinstance(flow_doc.get("gpu_allocated_bytes"), int):
        out["dataflow"] = {
            "device": flow_doc.get("device"),
            "allocated_bytes": flow_doc["gpu_allocated_bytes"],
            "reserved_bytes": flow_doc.get("gpu_reserved_bytes"),
        }
    return out or None


class OperationsMetrics(TypedDict):
    """Process resources and the ingestion, refresh and training figures (the operations page's charts)."""

    ts: float
    #: pid-keyed figures of the API and the dataflow: cpu_percent, rss_bytes ...
    processes: dict[str, dict[str, Any]]
    #: explanation and job worker processes
    workers: list[dict[str, Any]]
    gpu: dict[str, Any] | None
    system: dict[str, Any]
    ingestion: dict[str, Any]
    refresh: dict[str, Any]
    #: the result of the newest succeeded job of each training kind
    training: dict[str, Any]


def operations_metrics(ctx: "AppContext") -> OperationsMetrics:
    """The document of ``GET /api/v1/operations/metrics`` and of the stream's ``metrics`` events."""
    store = ctx.store()
    flow = dataflow_state(store, ctx.settings.dataflow_stale_after)
    meter = ctx.meter
    me = os.getpid()
    meter.prime([me, *([flow.pid] if flow.alive and flow.pid else [])])  # one first window for both
    processes: dict[str, Any] = {}
    if (api := meter.figures(me)) is not None:
        processes["api"] = api
    workers = meter.children(me)
    flow_doc = store.status.get("dataflow")
    if flow.alive and flow.pid and (df := meter.figures(flow.pid)) is not None:
        processes["dataflow"] = df
    meter.forget_others({me, *(w["pid"] for w in workers), *([flow.pid] if flow.pid else [])})
    last_jobs = {kind: store.jobs.last_result(kind) for kind in ("graph.refresh", "training.hgt", "fusion.train")}
    return {
        "ts": round(time.time(), 3),
        "processes": processes,
        "workers": workers,  # explanation and job worker processes
        "gpu": gpu(flow_doc),
        "system": {"cpu_count": psutil.cpu_count(), "cpu_percent": psutil.cpu_percent(interval=None),
                   "memory_percent": psutil.virtual_memory().percent},
        "ingestion": {"state": flow.ingestion, "events_per_s": flow.events_per_s, "events_in": flow.events_in,
                      "lag_s": flow.lag_s, "backlog": flow.backlog},
        "refresh": {"state": flow.refresh, "queue": flow.refresh_queue, "model_version": flow.model_version,
                    "device": flow.device},
        "training": last_jobs,
    }
