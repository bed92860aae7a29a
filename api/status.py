"""The system's state as the API reports it: the dataflow's status row, the log, jobs and models."""

from __future__ import annotations

import math
import os
import sqlite3
import time
from typing import Any

from dataflow.control import PROFILES_CHECKPOINT
from storage.projections import Checkpoints, Jobs, Models, OpsHistory, Status

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


def last_event(conn: sqlite3.Connection) -> tuple[int, float | None]:
    r = conn.execute("SELECT seq, ts FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(r[0]), float(r[1])) if r else (0, None)


def dataflow_state(conn: sqlite3.Connection, stale_after: float) -> DataflowState:
    """The flow is alive when it says it runs, its row is fresh, and (on this machine) its pid exists."""
    doc = Status(conn).get("dataflow")
    last_seq, last_ts = last_event(conn)
    backlog = max(0, last_seq - Checkpoints(conn).get(PROFILES_CHECKPOINT))  # whether a flow runs or not
    if doc is None:
        return DataflowState(alive=False, state="unknown", last_event_at=last_ts, backlog=backlog)
    age = max(0.0, time.time() - float(doc.get("updated_at") or 0))
    alive = doc.get("state") == "running" and age <= stale_after and _pid_alive(doc.get("pid"))
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
        workers=_int(doc.get("workers")),
        dead_letters=_int(doc.get("dead_letters")),
        pid=_int(doc.get("pid")),
        updated_at=_num(doc.get("updated_at")),
        status_age_s=round(age, 3),
    )


def model_versions(conn: sqlite3.Connection) -> dict[str, int | None]:
    m = Models(conn)
    return {"hgt": m.latest_version("hgt"), "fusion": m.latest_version("fusion")}


def jobs_summary(conn: sqlite3.Connection) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT id, kind, state, progress FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at"
    ).fetchall()
    return {"active": [{"id": r[0], "kind": r[1], "state": r[2], "progress": r[3]} for r in rows]}


def full_status(conn: sqlite3.Connection, stale_after: float) -> dict[str, Any]:
    """Everything the operations page shows: components, jobs, command history, models."""
    last_seq, last_ts = last_event(conn)
    return {
        "dataflow": dataflow_state(conn, stale_after).model_dump(),
        "components": Status(conn).all(),
        "log": {
            "last_seq": last_seq,
            "last_event_at": last_ts,
            "dead_letters": int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]),
        },
        "models": model_versions(conn),
        "jobs": Jobs(conn).list(limit=20),
        "history": OpsHistory(conn).list(limit=50),
    }
