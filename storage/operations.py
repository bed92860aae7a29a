"""Operational state in the store (not projections of the log): background jobs, operator commands and
the components' status documents."""

from __future__ import annotations

import builtins
import json
import os
import socket
import sqlite3
import time
import uuid
from typing import Any, Sequence

from .db import json_text, transaction


def this_process() -> str:
    """This process as a job's creator or claimer: "host:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


JOB_COLUMNS = ("id, kind, state, params, progress, message, result, error, created_at, started_at, finished_at, "
               "created_by, claimed_by")
_JOB_NAMES = [c.strip() for c in JOB_COLUMNS.split(",")]


def job_row(r: tuple[Any, ...]) -> dict[str, Any]:
    """A ``jobs`` row (of :data:`JOB_COLUMNS`) as a dict, params and result parsed."""
    d = dict(zip(_JOB_NAMES, r))
    d["params"] = json.loads(d["params"])
    d["result"] = json.loads(d["result"]) if d["result"] else None
    return d


class Jobs:
    """Background jobs: state, progress, result."""

    _COLS = JOB_COLUMNS

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def create(self, kind: str, params: dict[str, Any]) -> str:
        job_id = uuid.uuid4().hex[:12]
        self.conn.execute(
            "INSERT INTO jobs(id, kind, state, params, progress, message, created_at, created_by) "
            "VALUES (?, ?, 'queued', ?, 0, '', ?, ?)",
            (job_id, kind, json_text(params), time.time(), this_process()),
        )
        return job_id

    def claim(self, job_id: str, worker: str) -> dict[str, Any] | None:
        """Mark a queued job running for ``worker``: its row, or None when it is not queued (any more)."""
        with transaction(self.conn):
            n = self.conn.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, claimed_by = ? WHERE id = ? AND state = 'queued'",
                (time.time(), worker, job_id),
            ).rowcount
            return self.get(job_id) if n else None

    def claim_next(self, kinds: Sequence[str], worker: str) -> dict[str, Any] | None:
        """The oldest queued job of ``kinds``, marked running for ``worker`` (None: none queued). The
        write lock (BEGIN IMMEDIATE) makes each job go to one claimer only."""
        with transaction(self.conn):
            r = self.conn.execute(
                f"SELECT id FROM jobs WHERE state = 'queued' AND kind IN ({','.join('?' * len(kinds))}) "
                "ORDER BY created_at, id LIMIT 1",
                tuple(kinds),
            ).fetchone()
            return self.claim(r[0], worker) if r else None

    def update(self, job_id: str, **fields: Any) -> None:
        allowed = {"state", "progress", "message", "result", "error", "started_at", "finished_at"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown job fields: {sorted(bad)}")
        if "result" in fields and not isinstance(fields["result"], (str, type(None))):
            fields["result"] = json_text(fields["result"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))

    def _row(self, r: tuple[Any, ...]) -> dict[str, Any]:
        return job_row(r)

    def get(self, job_id: str) -> dict[str, Any] | None:
        r = self.conn.execute(f"SELECT {self._COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._row(r) if r else None

    def list(self, limit: int = 50, kind: str | None = None) -> builtins.list[dict[str, Any]]:
        q = f"SELECT {self._COLS} FROM jobs"
        args: tuple[Any, ...] = ()
        if kind:
            q += " WHERE kind = ?"
            args = (kind,)
        return [self._row(r) for r in self.conn.execute(q + " ORDER BY created_at DESC LIMIT ?", (*args, limit))]

    def all_active(self) -> builtins.list[dict[str, Any]]:
        """Queued and running jobs, oldest first."""
        return [
            self._row(r)
            for r in self.conn.execute(
                f"SELECT {self._COLS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at"
            )
        ]

    def create_unless_busy(
        self, kind: str, params: dict[str, Any], excluding: Sequence[str]
    ) -> tuple[str | None, dict[str, Any] | None]:
        """Create a job unless one of the kinds ``excluding`` is queued or running, atomically:
        (new id, None), or (None, the busy job's row)."""
        with transaction(self.conn):
            r = self.conn.execute(
                f"SELECT {self._COLS} FROM jobs WHERE state IN ('queued', 'running') "
                f"AND kind IN ({','.join('?' * len(excluding))}) LIMIT 1",
                tuple(excluding),
            ).fetchone()
            if r is not None:
                return None, self._row(r)
            return self.create(kind, params), None

    def count_by_state(self) -> dict[str, int]:
        return {state: int(n) for state, n in self.conn.execute("SELECT state, count(*) FROM jobs GROUP BY state")}

    def last_result(self, kind: str) -> Any:
        """The result of the newest succeeded job of ``kind`` (None: none, or it had no result)."""
        r = self.conn.execute(
            "SELECT result FROM jobs WHERE kind = ? AND state = 'succeeded' ORDER BY finished_at DESC LIMIT 1",
            (kind,),
        ).fetchone()
        return json.loads(r[0]) if r and r[0] else None


class OpsHistory:
    """Operator commands (pending until the running flow applies them) and their effect."""

    _COLS = "id, ts, source, command, params, state, effect, applied_at"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def request(self, command: str, params: dict[str, Any] | None = None, source: str = "cli") -> int:
        cur = self.conn.execute(
            "INSERT INTO ops_history(ts, source, command, params, state) VALUES (?, ?, ?, ?, 'pending')",
            (time.time(), source, command, json_text(params or {})),
        )
        return int(cur.lastrowid or 0)

    def record(self, command: str, effect: str, params: dict[str, Any] | None = None, source: str = "") -> int:
        """A command that took effect at once (no flow involved)."""
        now = time.time()
        cur = self.conn.execute(
            "INSERT INTO ops_history(ts, source, command, params, state, effect, applied_at) "
            "VALUES (?, ?, ?, ?, 'applied', ?, ?)",
            (now, source, command, json_text(params or {}), effect, now),
        )
        return int(cur.lastrowid or 0)

    def pending(self, after_id: int = 0) -> builtins.list[dict[str, Any]]:
        return [
            self._row(r)
            for r in self.conn.execute(
                f"SELECT {self._COLS} FROM ops_history WHERE state = 'pending' AND id > ? ORDER BY id", (after_id,)
            )
        ]

    def last_of(self, commands: Sequence[str], states: Sequence[str] = ("applied", "pending")) -> str | None:
        """The newest of ``commands`` in one of ``states`` (e.g. whether ingestion was last paused or resumed)."""
        r = self.conn.execute(
            f"SELECT command FROM ops_history WHERE command IN ({','.join('?' * len(commands))}) "
            f"AND state IN ({','.join('?' * len(states))}) ORDER BY id DESC LIMIT 1",
            (*commands, *states),
        ).fetchone()
        return str(r[0]) if r else None

    def resolve(self, op_id: int, state: str, effect: str) -> None:
        self.conn.execute(
            "UPDATE ops_history SET state = ?, effect = ?, applied_at = ? WHERE id = ?",
            (state, effect, time.time(), op_id),
        )

    def get(self, op_id: int) -> dict[str, Any] | None:
        r = self.conn.execute(f"SELECT {self._COLS} FROM ops_history WHERE id = ?", (op_id,)).fetchone()
        return self._row(r) if r else None

    def max_id(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(id), 0) FROM ops_history").fetchone()[0])

    def after(self, op_id: int) -> builtins.list[dict[str, Any]]:
        """Every command recorded after ``op_id``, oldest first; ``params`` as stored (JSON text), since
        whoever reads them may have to refuse what another writer put there."""
        cols = [c.strip() for c in self._COLS.split(",")]
        return [
            dict(zip(cols, r))
            for r in self.conn.execute(f"SELECT {self._COLS} FROM ops_history WHERE id > ? ORDER BY id", (op_id,))
        ]

    def latest(self, command: str, after_id: int = 0) -> dict[str, Any] | None:
        """The newest ``command`` recorded after ``after_id``."""
        r = self.conn.execute(
            f"SELECT {self._COLS} FROM ops_history WHERE command = ? AND id > ? ORDER BY id DESC LIMIT 1",
            (command, after_id),
        ).fetchone()
        return self._row(r) if r else None

    def list(self, limit: int = 100) -> builtins.list[dict[str, Any]]:
        return [
            self._row(r)
            for r in self.conn.execute(f"SELECT {self._COLS} FROM ops_history ORDER BY id DESC LIMIT ?", (limit,))
        ]

    def _row(self, r: tuple[Any, ...]) -> dict[str, Any]:
        d = dict(zip([c.strip() for c in self._COLS.split(",")], r))
        d["params"] = json.loads(d["params"]) if d["params"] else {}
        return d


class Status:
    """Latest status document per component (the dataflow writes, the API reads)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def put(self, component: str, data: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT INTO status(component, data, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(component) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
            (component, json_text(data), time.time()),
        )

    def get(self, component: str) -> dict[str, Any] | None:
        r = self.conn.execute("SELECT data, updated_at FROM status WHERE component = ?", (component,)).fetchone()
        if r is None:
            return None
        d = json.loads(r[0])
        d["updated_at"] = r[1]
        return d

    def all(self) -> dict[str, dict[str, Any]]:
        out = {}
        for comp, data, upd in self.conn.execute("SELECT component, data, updated_at FROM status ORDER BY component"):
            d = json.loads(data)
            d["updated_at"] = upd
            out[comp] = d
        return out
