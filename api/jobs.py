"""Background jobs: a row in ``jobs`` and a worker process per job, never the API's event loop.

The API process submits (one job of a group at a time: 409 while busy), starts a spawned worker
process, and watches it; the worker marks the row running, reports progress, and stores the result
or the error. A worker that dies without saying so is marked failed with its exit code; a job left
running by a previous API (killed) is marked failed at start-up. Worker processes exit by themselves
when the API process that started them is gone.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.process
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from storage import EventStore, open_store
from storage.interface import JobRepo
from config.settings import Settings

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
class JobRunner:
    settings: Settings
    #: called in the API process when a job ended (any state), with its final row
    on_finished: Callable[[dict[str, Any]], None] = lambda row: None
    #: job id -> (worker, database file it runs against; the API may switch files meanwhile)
    _procs: dict[str, tuple[multiprocessing.process.BaseProcess, Path]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _store(self, db: Path | None = None) -> EventStore:
        return open_store(db or self.settings.db)

    def recover(self) -> list[str]:
        """Jobs a previous API left queued or running can't finish any more: mark them failed."""
        with self._store() as store:
            ids = [r["id"] for r in store.jobs.all_active()]
            for job_id in ids:
                store.jobs.update(job_id, state="failed", error="interrupted: the API stopped before it finished",
                                  finished_at=time.time())
            return ids

    def submit(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """Create the row and start its worker; Conflict when a job of the same group is active."""
        group = GROUPS[kind]
        kinds = [k for k, g in GROUPS.items() if g == group]
        with self._store() as store:
            job_id, busy = store.jobs.create_unless_busy(kind, params, kinds)
            if job_id is None:
                assert busy is not None
                raise Conflict(f"job {busy['id']} ({busy['kind']}) is {busy['state']}; one {group} job at a time")
            try:
                self._start(job_id)
            except Exception as err:  # the row must not stay queued and block its group for ever
                store.jobs.update(job_id, state="failed", error=f"could not start the worker: {err}",
                                  finished_at=time.time())
                raise Unavailable(f"could not start a worker process for the job: {err}") from err
            row = store.jobs.get(job_id)
            assert row is not None
            return job_view(row)

    def _start(self, job_id: str) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded server; torch starts clean
        proc = ctx.Process(
            target=run_job, args=(self.settings.model_dump(mode="json"), job_id, os.getpid()),
            name=f"ups-job-{job_id}",
        )
        proc.start()
        with self._lock:
            self._procs[job_id] = (proc, self.settings.db)

    def poll(self) -> list[dict[str, Any]]:
        """Reap finished workers; returns their final rows (and calls ``on_finished``)."""
        with self._lock:
            done = [(j, p, db) for j, (p, db) in self._procs.items() if not p.is_alive()]
        finished = []
        for job_id, proc, db in done:
            proc.join(timeout=1)
            with self._store(db) as store:
                jobs = store.jobs
                row = jobs.get(job_id)
                if row is not None and row["state"] not in FINAL:
                    jobs.update(job_id, state="failed", finished_at=time.time(),
                                error=f"the worker process exited with code {proc.exitcode} before finishing")
                    row = jobs.get(job_id)
                if row is not None:
                    finished.append(row)
        for row in finished:
            try:
                self.on_finished(row)
            except Exception:  # noqa: BLE001 - a hook failure must not stop the watcher
                log.exception("after job %s", row["id"])
        with self._lock:  # only now: a job counts as handled once its after-effects are done
            for j, _, _ in done:
                self._procs.pop(j, None)
        return finished

    def handled(self, job_id: str) -> bool:
        """The job's worker has ended and its after-effects (e.g. the switch to a new file) are done."""
        with self._lock:
            return job_id not in self._procs

    def running(self) -> list[str]:
        with self._lock:
            return [j for j, (p, _) in self._procs.items() if p.is_alive()]

    def cancel_all(self, reason: str, timeout: float = 5.0) -> list[str]:
        """Stop every worker (SIGTERM, then SIGKILL) and mark its job cancelled."""
        with self._lock:
            procs = dict(self._procs)
        for job_id, (_, db) in procs.items():  # marked first: the watcher must not call it a failure
            with self._store(db) as store:
                row = store.jobs.get(job_id)
                if row is not None and row["state"] not in FINAL:
                    store.jobs.update(job_id, state="cancelled", error=reason, finished_at=time.time())
        for p, _ in procs.values():
            p.terminate()
        deadline = time.monotonic() + timeout
        for p, _ in procs.values():
            p.join(timeout=max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
        with self._lock:
            for j in procs:
                self._procs.pop(j, None)
        return list(procs)


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


def exit_with_parent(parent_pid: int) -> None:
    """A worker's watchdog thread: end the process when the API that started it is gone (killed, crashed)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(3)


def run_job(settings_doc: dict[str, Any], job_id: str, parent_pid: int) -> None:
    """Worker process entry: run one job to its end and record the outcome."""
    from .job_tasks import TASKS

    threading.Thread(target=exit_with_parent, args=(parent_pid,), daemon=True).start()
    settings = Settings.model_validate(settings_doc)
    store = open_store(settings.db)
    jobs = store.jobs
    row = jobs.get(job_id)
    if row is None:
        return
    jobs.update(job_id, state="running", started_at=time.time(), message="starting")
    progress = _ProgressWriter(jobs, job_id)
    try:
        result = TASKS[row["kind"]](settings, row["params"], progress)
    except Exception as err:  # noqa: BLE001 - every failure is recorded on the job
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        with open(settings.log_dir / "jobs.log", "a", encoding="utf-8") as f:
            f.write(f"--- job {job_id} ({row['kind']}) failed at {time.ctime()}\n{traceback.format_exc()}\n")
        jobs.update(job_id, state="failed", error=f"{type(err).__name__}: {err}"[:2000], finished_at=time.time())
        return
    jobs.update(job_id, state="succeeded", progress=1.0, message="done", result=finite_only(result),
                finished_at=time.time())


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
