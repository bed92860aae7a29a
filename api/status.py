"""The system's state as the API reports it: the dataflow's status row, the log, jobs and models."""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any

from typing_extensions import TypedDict

from dataflow.control import PROFILES_CHECKPOINT
from storage.interface import Store

from .schemas import DataflowState


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _num(v: Any) -> float | None:
    """Numbers from another process's JSON: only finite ones get through."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _int(v: Any) -> int | None:
    f = _num(v)
    return int(f) if f is not None else None


def dataflow_state(store: Store, stale_after: float) -> DataflowState:
    """The flow is alive when it says it runs, its row is fresh, and (when it runs on this machine) its
    pid exists; a flow on another host of a cluster is judged by its row alone."""
    doc = store.status.get("dataflow")
    last_seq, last_ts = store.last_event()
    backlog = max(0, last_seq - store.checkpoints.get(PROFILES_CHECKPOINT))  # whether a flow runs or not
    if doc is None:
        return DataflowState(alive=False, state="unknown", last_event_at=last_ts, backlog=backlog)
    age = max(0.0, time.time() - float(doc.get("updated_at") or 0))
    here = doc.get("host") in (None, socket.gethostname())
    alive = doc.get("state") == "running" and age <= stale_after and (not here or _pid_alive(doc.get("pid")))
    state = str(doc.get("state", "unknown")) if alive or doc.get("state") != "running" else "stopped"
    return DataflowState(
        alive=alive,
        state=state,
        error=str(doc["error"]) if state == "failed" and doc.get("error") else None,
        ingestion=str(doc.get("ingestion", "unknown")),
        refresh=str(doc.get("refresh", "unknown")),
        events_per_s=_num(doc.get("events_per_s")),
        events_in=_int(doc.get("events_in")),
        backlog=backlog,
        lag_s=_num(doc.get("lag_s")),
        last_event_at=last_ts,
        refresh_queue=_int(doc.get("refresh_queue")),
        refresh_backfill=_int(doc.get("refresh_backfill")),
        oldest_pending_s=_num(doc.get("oldest_pending_s")),
        refreshes_per_s=_num(doc.get("refreshes_per_s")),
        model_version=_int(doc.get("model_version")),
        device=str(doc["device"]) if doc.get("device") is not None else None,
        refresh_process=_int(doc.get("refresh_process")),
        workers=_int(doc.get("workers")),
        dead_letters=_int(doc.get("dead_letters")),
        pid=_int(doc.get("pid")),
        updated_at=_num(doc.get("updated_at")),
        status_age_s=round(age, 3),
    )


def model_versions(store: Store) -> dict[str, int | None]:
    return {"hgt": store.models.latest_version("hgt"), "fusion": store.models.latest_version("fusion")}


def jobs_summary(store: Store) -> dict[str, Any]:
    keys = ("id", "kind", "state", "progress")
    return {"active": [{k: r[k] for k in keys} for r in store.jobs.all_active()]}


class LogSummary(TypedDict):
    last_seq: int
    last_event_at: float | None
    dead_letters: int


class SystemStatus(TypedDict):
    """Everything the operations page shows: components, jobs, command history, models."""

    dataflow: DataflowState
    #: each component's latest status document, with its ``updated_at``
    components: dict[str, dict[str, Any]]
    log: LogSummary
    models: dict[str, int | None]
    #: the newest jobs and operator commands, as ``/api/v1/jobs`` and the history show them
    jobs: list[dict[str, Any]]
    history: list[dict[str, Any]]


class OperationsStatus(SystemStatus):
    api: dict[str, Any]
    shutting_down: bool


def full_status(store: Store, stale_after: float) -> SystemStatus:
    """Everything the operations page shows: components, jobs, command history, models."""
    last_seq, last_ts = store.last_event()
    return {
        "dataflow": dataflow_state(store, stale_after),
        "components": store.status.all(),
        "log": {"last_seq": last_seq, "last_event_at": last_ts, "dead_letters": store.dead_letter_count()},
        "models": model_versions(store),
        "jobs": store.jobs.list(limit=20),
        "history": store.ops.list(limit=50),
    }
