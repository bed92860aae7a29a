"""Jobs, operator commands and component status in the PostgreSQL store (``storage.interface``)."""

from __future__ import annotations

import builtins
import json
import time
import uuid
from typing import Any, Sequence

from .pg_db import PgConnections
from .pg_schema import JOBS_LOCK
from .db import json_text
from .operations import JOB_COLUMNS, job_row, this_process

_JOB_COLS = JOB_COLUMNS
_JOB_FIELDS = {"state", "progress", "message", "result", "error", "started_at", "finished_at"}
_job = job_row


class PgJobs:
    def __init__(self, db: PgConnections) -> None:
        self.db = db

    def create(self, kind: str, params: dict[str, Any]) -> str:
        job_id = uuid.uuid4().hex[:12]
        self.db.run(
            "INSERT INTO jobs (id, kind, state, params, progress, message, created_at, created_by) "
            "VALUES (%s, %s, 'queued', %s, 0, '', %s, %s)",
            (job_id, kind, json_text(params), time.time(), this_process()),
        )
        return job_id

    def claim(self, job_id: str, worker: str) -> dict[str, Any] | None:
        """Mark a queued job running for ``worker``: its row, or None when it is not queued (any more) or
        another claimer holds it this instant (``SKIP LOCKED``: a claimer never waits for another)."""
        r = self.db.one(
            f"UPDATE jobs SET state = 'running', started_at = %s, claimed_by = %s WHERE id = "
            "(SELECT id FROM jobs WHERE id = %s AND state = 'queued' FOR UPDATE SKIP LOCKED) "
            f"RETURNING {_JOB_COLS}",
            (time.time(), worker, job_id),
        )
        return _job(r) if r else None

    def claim_next(self, kinds: Sequence[str], worker: str) -> dict[str, Any] | None:
        """The oldest queued job of ``kinds``, marked running for ``worker`` (None: none queued): rows
        another claimer has locked are skipped, so concurrent claimers each get a different job."""
        r = self.db.one(
            "UPDATE jobs SET state = 'running', started_at = %s, claimed_by = %s WHERE id = "
            "(SELECT id FROM jobs WHERE state = 'queued' AND kind = ANY(%s) ORDER BY created_at, id "
            f"LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING {_JOB_COLS}",
            (time.time(), worker, list(kinds)),
        )
        return _job(r) if r else None

    def create_unless_busy(
        self, kind: str, params: dict[str, Any], excluding: Sequence[str]
    ) -> tuple[str | None, dict[str, Any] | None]:
        """Create a job unless one of the kinds ``excluding`` is queued or running: the check and the
        insert under one lock, so two API nodes never both start one."""
        with self.db.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (JOBS_LOCK,))
            r = conn.execute(
                f"SELECT {_JOB_COLS} FROM jobs WHERE state IN ('queued', 'running') AND kind = ANY(%s) LIMIT 1",
                (list(excluding),),
            ).fetchone()
            if r is not None:
                return None, _job(r)
            return self.create(kind, params), None

    def update(self, job_id: str, **fields: Any) -> None:
        bad = set(fields) - _JOB_FIELDS
        if bad:
            raise ValueError(f"unknown job fields: {sorted(bad)}")
        if "result" in fields and not isinstance(fields["result"], (str, type(None))):
            fields["result"] = json_text(fields["result"])
        sets = ", ".join(f"{k} = %s" for k in fields)
        self.db.run(f"UPDATE jobs SET {sets} WHERE id = %s", (*fields.values(), job_id))

    def get(self, job_id: str) -> dict[str, Any] | None:
        r = self.db.one(f"SELECT {_JOB_COLS} FROM jobs WHERE id = %s", (job_id,))
        return _job(r) if r else None

    def list(self, limit: int = 50, kind: str | None = None) -> builtins.list[dict[str, Any]]:
        rows = self.db.all(
            f"SELECT {_JOB_COLS} FROM jobs WHERE %s OR kind = %s ORDER BY created_at DESC LIMIT %s",
            (not kind, kind or "", limit),
        )
        return [_job(r) for r in rows]

    def all_active(self) -> builtins.list[dict[str, Any]]:
        rows = self.db.all(f"SELECT {_JOB_COLS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at")
        return [_job(r) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        return {state: int(n) for state, n in self.db.all("SELECT state, count(*) FROM jobs GROUP BY state")}

    def last_result(self, kind: str) -> Any:
        r = self.db.one(
            "SELECT result FROM jobs WHERE kind = %s AND state = 'succeeded' ORDER BY finished_at DESC LIMIT 1", (kind,)
        )
        return json.loads(r[0]) if r and r[0] else None


_OPS_COLS = "id, ts, source, command, params, state, effect, applied_at"
_OPS_NAMES = [c.strip() for c in _OPS_COLS.split(",")]


def _op(r: tuple[Any, ...]) -> dict[str, Any]:
    d = dict(zip(_OPS_NAMES, r))
    d["params"] = json.loads(d["params"]) if d["params"] else {}
    return d


class PgOps:
    def __init__(self, db: PgConnections) -> None:
        self.db = db

    def request(self, command: str, params: dict[str, Any] | None = None, source: str = "cli") -> int:
        r = self.db.one(
            "INSERT INTO ops_history (ts, source, command, params, state) VALUES (%s, %s, %s, %s, 'pending') RETURNING id",
            (time.time(), source, command, json_text(params or {})),
        )
        return int(r[0]) if r else 0

    def record(self, command: str, effect: str, params: dict[str, Any] | None = None, source: str = "") -> int:
        now = time.time()
        r = self.db.one(
            "INSERT INTO ops_history (ts, source, command, params, state, effect, applied_at) "
            "VALUES (%s, %s, %s, %s, 'applied', %s, %s) RETURNING id",
            (now, source, command, json_text(params or {}), effect, now),
        )
        return int(r[0]) if r else 0

    def pending(self, after_id: int = 0) -> builtins.list[dict[str, Any]]:
        rows = self.db.all(
            f"SELECT {_OPS_COLS} FROM ops_history WHERE state = 'pending' AND id > %s ORDER BY id", (after_id,)
        )
        return [_op(r) for r in rows]

    def last_of(self, commands: Sequence[str], states: Sequence[str] = ("applied", "pending")) -> str | None:
        r = self.db.one(
            "SELECT command FROM ops_history WHERE command = ANY(%s) AND state = ANY(%s) ORDER BY id DESC LIMIT 1",
            (list(commands), list(states)),
        )
        return str(r[0]) if r else None

    def resolve(self, op_id: int, state: str, effect: str) -> None:
        self.db.run(
            "UPDATE ops_history SET state = %s, effect = %s, applied_at = %s WHERE id = %s",
            (state, effect, time.time(), op_id),
        )

    def get(self, op_id: int) -> dict[str, Any] | None:
        r = self.db.one(f"SELECT {_OPS_COLS} FROM ops_history WHERE id = %s", (op_id,))
        return _op(r) if r else None

    def list(self, limit: int = 100) -> builtins.list[dict[str, Any]]:
        return [_op(r) for r in self.db.all(f"SELECT {_OPS_COLS} FROM ops_history ORDER BY id DESC LIMIT %s", (limit,))]

    def max_id(self) -> int:
        r = self.db.one("SELECT coalesce(max(id), 0) FROM ops_history")
        return int(r[0]) if r else 0

    def after(self, op_id: int) -> builtins.list[dict[str, Any]]:
        """Every command recorded after ``op_id``, oldest first, ``params`` as stored (JSON text)."""
        rows = self.db.all(f"SELECT {_OPS_COLS} FROM ops_history WHERE id > %s ORDER BY id", (op_id,))
        return [dict(zip(_OPS_NAMES, r)) for r in rows]

    def latest(self, command: str, after_id: int = 0) -> dict[str, Any] | None:
        r = self.db.one(
            f"SELECT {_OPS_COLS} FROM ops_history WHERE command = %s AND id > %s ORDER BY id DESC LIMIT 1",
            (command, after_id),
        )
        return _op(r) if r else None


class PgStatus:
    def __init__(self, db: PgConnections) -> None:
        self.db = db

    def put(self, component: str, data: dict[str, Any]) -> None:
        self.db.run(
            "INSERT INTO status (component, data, updated_at) VALUES (%s, %s, %s) ON CONFLICT (component) "
            "DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
            (component, json_text(data), time.time()),
        )

    def get(self, component: str) -> dict[str, Any] | None:
        r = self.db.one("SELECT data, updated_at FROM status WHERE component = %s", (component,))
        if r is None:
            return None
        d: dict[str, Any] = json.loads(r[0])
        d["updated_at"] = r[1]
        return d

    def all(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for comp, data, upd in self.db.all("SELECT component, data, updated_at FROM status ORDER BY component"):
            d = json.loads(data)
            d["updated_at"] = upd
            out[comp] = d
        return out
