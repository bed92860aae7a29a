"""Background jobs: a row in ``jobs`` and a warm worker process per job group, never the API's event loop.

The API process submits (one job of a group at a time: 409 while busy) and hands the job to its group's
worker over a pipe; the worker marks the row running, reports progress, stores the result or the error,
and says it is done. Workers stay between jobs with torch imported and (the graph group's) graphs built
and kept current with the log, so a job's wall time is mostly its work: a fresh process per job spent
more time importing and reading the log than embedding. Each result carries ``work_s`` (the task) and
``wall_s`` (submitted to finished). A worker that dies mid-job is marked failed with its exit code and
replaced at the next job; a job left running by a previous API (killed) is marked failed at start-up.
Worker processes exit by themselves when the API process that started them is gone.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil

from config.db_location import DbLocation
from config.settings import Settings
from storage import Store, open_store, this_process
from storage.interface import JobRepo

from .errors import Conflict, Unavailable

log = logging.getLogger("ups.api.jobs")

#: jobs of one group exclude each other (both retrain the HGT, or both rewrite the store)
GROUPS: dict[str, str] = {
    "graph.refresh": "graph",
    "training.hgt": "graph",
    "fusion.train": "fusion",
    "data.regenerate": "data",
}
FINAL = ("succeeded", "failed", "cancelled")


def job_view(row: dict[str, Any]) -> dict[str, Any]:
    """A jobs row as the API shows it: with its duration, progress clamped to [0, 1]."""
    out = dict(row)
    out["progress"] = min(1.0, max(0.0, float(row.get("progress") or 0.0)))
    out["message"] = row.get("message") or ""
    start, end = row.get("started_at"), row.get("finished_at")
    out["duration_s"] = round((end or time.time()) - start, 3) if start else None
    return out


@dataclass
class _Worker:
    """A group's worker process, the API's end of its pipe, and the job it runs now (if any)."""

    proc: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    job: str | None = None
    #: the database file of that job (the API may switch files meanwhile)
    db: DbLocation | None = None


@dataclass
class JobRunner:
    settings: Settings
    #: called in the API process when a job ended (any state), with its final row
    on_finished: Callable[[dict[str, Any]], None] = lambda row: None
    #: group -> its worker
    _workers: dict[str, _Worker] = field(default_factory=dict)
    #: jobs handed to a worker whose after-effects are not done yet
    _active: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _store(self, db: DbLocation | None = None) -> Store:
        return open_store(db or self.settings.db)

    def recover(self) -> list[str]:
        """Jobs a previous API left queued or running can't finish any more: mark them failed. Only those of
        an API process gone from this host (its workers died with it): on a store shared by several API
        nodes, the others' jobs are theirs to finish."""
        with self._store() as store:
            ids = [r["id"] for r in store.jobs.all_active() if _orphaned(r.get("created_by"))]
            for job_id in ids:
                store.jobs.update(job_id, state="failed", error="interrupted: the API stopped before it finished",
                                  finished_at=time.time())
            return ids

    def submit(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """Create the row and hand it to its group's worker; Conflict when a job of the same group is active."""
        group = GROUPS[kind]
        kinds = [k for k, g in GROUPS.items() if g == group]
        with self._store() as store:
            job_id, busy = store.jobs.create_unless_busy(kind, params, kinds)
            if job_id is None:
                assert busy is not None
                raise Conflict(f"job {busy['id']} ({busy['kind']}) is {busy['state']}; one {group} job at a time")
            try:
                self._start(job_id, group)
            except Exception as err:  # the row must not stay queued and block its group for ever
                store.jobs.update(job_id, state="failed", error=f"could not start the worker: {err}",
                                  finished_at=time.time())
                raise Unavailable(f"could not start a worker process for the job: {err}") from err
            row = store.jobs.get(job_id)
            assert row is not None
            return job_view(row)

    def warm(self, *groups: str) -> None:
        """Start these groups' workers now, so that they are warm (imports, graphs) before the first job."""
        with self._lock:
            for group in groups:
                self._worker(group)

    def _worker(self, group: str) -> _Worker:
        """The group's live worker, started when it has none (call with the lock held)."""
        w = self._workers.get(group)
        if w is not None and w.proc.is_alive():
            return w
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded server; torch starts clean
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(
            target=serve, args=(theirs, group, self.settings.model_dump(mode="json"), os.getpid()),
            name=f"ups-jobs-{group}", daemon=True,
        )
        proc.start()
        theirs.close()
        w = self._workers[group] = _Worker(proc, ours)
        return w

    def _start(self, job_id: str, group: str) -> None:
        with self._lock:
            w = self._worker(group)
            w.conn.send((job_id, self.settings.model_dump(mode="json")))
            w.job, w.db = job_id, self.settings.db
            self._active.add(job_id)

    def poll(self) -> list[dict[str, Any]]:
        """Collect jobs whose worker said done or died; returns their final rows (and calls ``on_finished``)."""
        ended: list[tuple[str, DbLocation, int | None]] = []  # job, its file, exit code of a worker that died
        with self._lock:
            for group, w in list(self._workers.items()):
                if w.job is not None and w.conn.poll():
                    try:
                        w.conn.recv()
                        ended.append((w.job, w.db or self.settings.db, None))
                    except (EOFError, OSError):  # died as it answered: handled as a death below
                        pass
                    else:
                        w.job = None
                        continue
                if not w.proc.is_alive():
                    w.proc.join(timeout=1)
                    if w.job is not None:
                        ended.append((w.job, w.db or self.settings.db, w.proc.exitcode))
                    w.conn.close()
                    del self._workers[group]
        finished = []
        for job_id, db, exitcode in ended:
            with self._store(db) as store:
                jobs = store.jobs
                row = jobs.get(job_id)
                if row is not None and row["state"] not in FINAL:
                    jobs.update(job_id, state="failed", finished_at=time.time(),
                                error=f"the worker process exited with code {exitcode} before finishing")
                    row = jobs.get(job_id)
                if row is not None:
                    finished.append(row)
        for row in finished:
            try:
                self.on_finished(row)
            except Exception:  # noqa: BLE001 - a hook failure must not stop the watcher
                log.exception("after job %s", row["id"])
        with self._lock:  # only now: a job counts as handled once its after-effects are done
            self._active.difference_update(j for j, _, _ in ended)
        return finished

    def handled(self, job_id: str) -> bool:
        """The job has ended and its after-effects (e.g. the switch to a new file) are done."""
        with self._lock:
            return job_id not in self._active

    def cancel_all(self, reason: str, timeout: float = 5.0) -> list[str]:
        """Stop every worker (SIGTERM, then SIGKILL) and mark the jobs they ran cancelled."""
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        busy = [(w.job, w.db or self.settings.db) for w in workers if w.job is not None]
        for job_id, db in busy:  # marked first: the watcher must not call it a failure
            with self._store(db) as store:
                row = store.jobs.get(job_id)
                if row is not None and row["state"] not in FINAL:
                    store.jobs.update(job_id, state="cancelled", error=reason, finished_at=time.time())
        for w in workers:
            w.proc.terminate()
        deadline = time.monotonic() + timeout
        for w in workers:
            w.proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=2)
            w.conn.close()
        with self._lock:
            self._active.difference_update(j for j, _ in busy)
        return [j for j, _ in busy]


# ------------------------------------------------------------------------------------ worker side


class _ProgressWriter:
    """Progress reports from the job, written at most every 0.25 s (each is a small transaction)."""

    def __init__(self, jobs: JobRepo, job_id: str) -> None:
        self.jobs, self.job_id, self._last = jobs, job_id, 0.0

    def __call__(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - self._last < 0.25 and fraction < 1:
            return
        self._last = now
        f = fraction if fraction == fraction else 0.0  # NaN from a job must not reach the API
        self.jobs.update(self.job_id, progress=min(1.0, max(0.0, float(f))), message=str(message)[:500])


def _orphaned(created_by: str | None) -> bool:
    """Whether the API process that created a job is gone, seen from a starting API: one of this host that
    no longer runs, or that had this process's pid (a previous process of the same number, or a previous
    app in this process), or a row from before jobs named their creator."""
    if not created_by:
        return True
    host, _, pid = created_by.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return int(pid) == os.getpid() or not psutil.pid_exists(int(pid))


def exit_with_parent(parent_pid: int) -> None:
    """A worker's watchdog thread: end the process when the API that started it is gone (killed, crashed)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(3)


def serve(conn: multiprocessing.connection.Connection, group: str, settings_doc: dict[str, Any],
          parent_pid: int) -> None:
    """A group's worker process: warm up, then run the jobs the API sends, one at a time, until it goes."""
    threading.Thread(target=exit_with_parent, args=(parent_pid,), daemon=True).start()
    graphs = _warm_up(group, Settings.model_validate(settings_doc))
    while True:
        try:
            job_id, doc = conn.recv()
        except (EOFError, OSError):  # the API closed its end
            return
        run_job(doc, job_id, graphs)
        conn.send(job_id)


def _warm_up(group: str, settings: Settings) -> Any:
    """What the group's jobs need loaded: torch and the scoring modules, and for the graph group its graph
    cache with the full graph of the log (None for groups that embed nothing)."""
    if group == "data":  # regenerate runs ``ups init`` in a child process: nothing to keep warm
        return None
    from scoring.service import ScoringService  # noqa: F401 - the import is the warm-up (torch, models)

    if group != "graph":
        return None
    from config.device import resolve_device
    from scoring.graph_cache import GraphCache
    from storage import open_store

    graphs = GraphCache()
    try:
        with open_store(settings.db) as store:
            graphs.graph(store, settings.db, device=resolve_device(settings.device), sample_ratio=1.0,
                         sample_seed=settings.train_seed, compact_min=settings.graph_compact_min)
    except Exception:  # noqa: BLE001 - the first job builds it and reports what is wrong
        log.warning("job worker: no graph built ahead of the first job", exc_info=True)
    return graphs


def run_job(settings_doc: dict[str, Any], job_id: str, graphs: Any = None) -> None:
    """Run one job to its end in this worker and record the outcome, its work and wall seconds with it."""
    from .job_tasks import TASKS

    settings = Settings.model_validate(settings_doc)
    store = open_store(settings.db)
    try:
        jobs = store.jobs
        row = jobs.get(job_id)
        if row is None:
            return
        # the claim (queued -> running) succeeds for one worker only, however often the job was handed out
        if jobs.claim(job_id, this_process()) is None:
            return
        jobs.update(job_id, message="starting")
        progress = _ProgressWriter(jobs, job_id)
        t0 = time.perf_counter()
        try:
            result = TASKS[row["kind"]](settings, row["params"], progress, graphs=graphs)
        except Exception as err:  # noqa: BLE001 - every failure is recorded on the job
            settings.log_dir.mkdir(parents=True, exist_ok=True)
            with open(settings.log_dir / "jobs.log", "a", encoding="utf-8") as f:
                f.write(f"--- job {job_id} ({row['kind']}) failed at {time.ctime()}\n{traceback.format_exc()}\n")
            jobs.update(job_id, state="failed", error=f"{type(err).__name__}: {err}"[:2000], finished_at=time.time())
            return
        work = time.perf_counter() - t0
        finished = time.time()
        timing = {"work_s": round(work, 3), "wall_s": round(finished - float(row["created_at"]), 3),
                  "worker_pid": os.getpid()}
        jobs.update(job_id, state="succeeded", progress=1.0, message="done",
                    result=finite_only({**result, **timing}), finished_at=finished)
    finally:
        store.close()


def finite_only(obj: Any) -> Any:
    """JSON has no NaN or infinity: a diverged loss is reported as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): finite_only(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_only(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return finite_only(obj.item())
        except (TypeError, ValueError):
            return str(obj)
    return obj
