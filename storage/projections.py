"""Small typed accessors for the projection tables (rebuildable from the log)."""

from __future__ import annotations

import builtins

import json
import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .db import transaction


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def sample_by_rank(profiles: Any, n: int, seed: int) -> builtins.list[str]:
    """``n`` user ids picked by their rank in id order with a seeded generator: the same sample from
    the same profiles on any backend (``profiles`` has ``count()`` and ``ids()``)."""
    total = profiles.count()
    if total == 0 or n <= 0:
        return []
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(total, size=min(n, total), replace=False).tolist())
    ids = profiles.ids()
    return [ids[i] for i in picks]


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


class Checkpoints:
    """projection name -> last applied seq."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, projection: str) -> int:
        r = self.conn.execute("SELECT seq FROM checkpoints WHERE projection = ?", (projection,)).fetchone()
        return int(r[0]) if r else 0

    def set(self, projection: str, seq: int) -> None:
        self.conn.execute(
            "INSERT INTO checkpoints(projection, seq, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(projection) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
            (projection, seq, time.time()),
        )

    def all(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT projection, seq FROM checkpoints ORDER BY projection"))

    def delete(self, projection: str) -> None:
        self.conn.execute("DELETE FROM checkpoints WHERE projection = ?", (projection,))


class Profiles:
    """user_id -> profile document (JSON), with the seq of the last event folded into it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def upsert_many(self, rows: Iterable[tuple[str, dict[str, Any] | str, int]]) -> int:
        """Insert or replace documents; a document given as ``str`` is already JSON and is stored as is."""
        now = time.time()
        data = [(uid, doc if isinstance(doc, str) else _dumps(doc), seq, now) for uid, doc, seq in rows]
        self.conn.executemany(
            "INSERT INTO profiles(user_id, profile, last_seq, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(user_id) DO UPDATE SET profile = excluded.profile, "
            "last_seq = excluded.last_seq, updated_at = excluded.updated_at",
            data,
        )
        return len(data)

    def get(self, user_id: str) -> dict[str, Any] | None:
        r = self.conn.execute("SELECT profile FROM profiles WHERE user_id = ?", (user_id,)).fetchone()
        return json.loads(r[0]) if r else None

    def get_many(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(user_ids), 500):
            chunk = list(user_ids[i : i + 500])
            q = f"SELECT user_id, profile FROM profiles WHERE user_id IN ({','.join('?' * len(chunk))})"
            out.update((uid, json.loads(p)) for uid, p in self.conn.execute(q, chunk))
        return out

    def get_with_seq(self, user_id: str) -> tuple[dict[str, Any], int] | None:
        """The document and the seq of the last event folded into it."""
        r = self.conn.execute("SELECT profile, last_seq FROM profiles WHERE user_id = ?", (user_id,)).fetchone()
        return (json.loads(r[0]), int(r[1])) if r else None

    def last_seqs(self, user_ids: Sequence[str]) -> dict[str, int]:
        """user id -> seq of the last event folded into its profile (users without one are left out)."""
        out: dict[str, int] = {}
        for i in range(0, len(user_ids), 500):
            chunk = list(user_ids[i : i + 500])
            q = f"SELECT user_id, last_seq FROM profiles WHERE user_id IN ({','.join('?' * len(chunk))})"
            out.update((uid, int(seq)) for uid, seq in self.conn.execute(q, chunk))
        return out

    def clear(self) -> None:
        self.conn.execute("DELETE FROM profiles")

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM profiles").fetchone()[0])

    def ids(self, limit: int = -1, offset: int = 0) -> builtins.list[str]:
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT user_id FROM profiles ORDER BY user_id LIMIT ? OFFSET ?", (limit, offset)
            )
        ]

    def sample_ids(self, n: int, seed: int = 0) -> builtins.list[str]:
        """A reproducible sample of user ids (by rank, not by random()), for backgrounds and previews."""
        return sample_by_rank(self, n, seed)

    def iter_all(self) -> Iterator[tuple[str, dict[str, Any], int]]:
        for uid, p, seq in self.conn.execute("SELECT user_id, profile, last_seq FROM profiles ORDER BY user_id"):
            yield uid, json.loads(p), seq


@dataclass(slots=True)
class EmbeddingRow:
    node_type: str
    node_id: str
    vector: np.ndarray
    model_version: int
    seq: int
    updated_at: float


EMBEDDING_UPSERT = (
    "INSERT INTO embeddings(node_type, node_id, vector, dim, model_version, seq, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(node_type, node_id) DO UPDATE SET "
    "vector = excluded.vector, dim = excluded.dim, model_version = excluded.model_version, "
    "seq = excluded.seq, updated_at = excluded.updated_at"
)


class Embeddings:
    """(node type, node id) -> float32 vector blob, model version, seq, time."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def put_many(self, rows: Iterable[tuple[str, str, np.ndarray, int, int]]) -> int:
        now = time.time()
        data = [
            (nt, nid, np.ascontiguousarray(v, dtype=np.float32).tobytes(), int(v.shape[-1]), mv, seq, now)
            for nt, nid, v, mv, seq in rows
        ]
        self.conn.executemany(EMBEDDING_UPSERT, data)
        return len(data)

    def put_block(self, node_type: str, node_ids: Sequence[str], vectors: np.ndarray, model_version: int,
                  seqs: np.ndarray) -> int:
        """Upsert the embeddings of many nodes of one type at once (in the caller's transaction):
        ``vectors`` is [n, dim]. The rows are cut from one float32 buffer and zipped in C, so no Python
        code runs per row."""
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[0] != len(node_ids) or len(seqs) != len(node_ids):
            raise ValueError(f"{len(node_ids)} ids, {len(seqs)} seqs and vectors of shape {v.shape} do not match")
        n, dim = v.shape
        # in key order: each row lands next to the previous one in the primary-key index (on ids in
        # arrival order SQLite otherwise walks the index at random: ~40 % slower measured)
        order = sorted(range(n), key=list(node_ids).__getitem__)
        ids = np.asarray(node_ids, dtype=object)[order].tolist()
        blobs = v[order].view(np.dtype((np.void, 4 * dim))).reshape(n).tolist()  # void rows come out as bytes
        self.conn.executemany(
            EMBEDDING_UPSERT,
            zip(repeat(node_type), ids, blobs, repeat(dim), repeat(int(model_version)),
                np.asarray(seqs, dtype=np.int64)[order].tolist(), repeat(time.time())),
        )
        return n

    def get(self, node_type: str, node_id: str) -> EmbeddingRow | None:
        r = self.conn.execute(
            "SELECT node_type, node_id, vector, model_version, seq, updated_at FROM embeddings "
            "WHERE node_type = ? AND node_id = ?",
            (node_type, node_id),
        ).fetchone()
        if r is None:
            return None
        return EmbeddingRow(r[0], r[1], np.frombuffer(r[2], dtype=np.float32).copy(), r[3], r[4], r[5])

    def get_many(self, node_type: str, node_ids: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(node_ids), 500):
            chunk = list(node_ids[i : i + 500])
            q = (
                "SELECT node_id, vector FROM embeddings WHERE node_type = ? "
                f"AND node_id IN ({','.join('?' * len(chunk))})"
            )
            out.update(
                (nid, np.frombuffer(v, dtype=np.float32).copy())
                for nid, v in self.conn.execute(q, (node_type, *chunk))
            )
        return out

    def of_version(self, node_type: str, model_version: int) -> Iterator[tuple[str, np.ndarray, int]]:
        """(node id, vector, seq) of every stored ``node_type`` embedding made by ``model_version``."""
        for nid, blob, seq in self.conn.execute(
            "SELECT node_id, vector, seq FROM embeddings WHERE node_type = ? AND model_version = ?",
            (node_type, model_version),
        ):
            yield nid, np.frombuffer(blob, dtype=np.float32), int(seq)

    def dim(self, node_type: str) -> int | None:
        """The dimension of the stored ``node_type`` embeddings (None: none stored)."""
        r = self.conn.execute("SELECT dim FROM embeddings WHERE node_type = ? LIMIT 1", (node_type,)).fetchone()
        return int(r[0]) if r else None

    def count(self, node_type: str | None = None) -> int:
        if node_type is None:
            return int(self.conn.execute("SELECT count(*) FROM embeddings").fetchone()[0])
        return int(
            self.conn.execute("SELECT count(*) FROM embeddings WHERE node_type = ?", (node_type,)).fetchone()[0]
        )


@dataclass(slots=True)
class RuleRow:
    name: str
    description: str
    weight: float
    condition: str
    enabled: bool
    seq: int
    updated_at: float


class Rules:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def upsert(self, name: str, description: str, weight: float, condition: str, enabled: bool, seq: int) -> None:
        self.conn.execute(
            "INSERT INTO rules(name, description, weight, condition, enabled, seq, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET description = excluded.description, "
            "weight = excluded.weight, condition = excluded.condition, enabled = excluded.enabled, "
            "seq = excluded.seq, updated_at = excluded.updated_at",
            (name, description, weight, condition, int(enabled), seq, time.time()),
        )

    def delete(self, name: str) -> bool:
        return self.conn.execute("DELETE FROM rules WHERE name = ?", (name,)).rowcount > 0

    def clear(self) -> None:
        self.conn.execute("DELETE FROM rules")

    def list(self) -> builtins.list[RuleRow]:
        rows = self.conn.execute(
            "SELECT name, description, weight, condition, enabled, seq, updated_at FROM rules ORDER BY name"
        ).fetchall()
        return [RuleRow(r[0], r[1] or "", r[2], r[3], bool(r[4]), r[5], r[6]) for r in rows]

    def get(self, name: str) -> RuleRow | None:
        r = self.conn.execute(
            "SELECT name, description, weight, condition, enabled, seq, updated_at FROM rules WHERE name = ?",
            (name,),
        ).fetchone()
        return RuleRow(r[0], r[1] or "", r[2], r[3], bool(r[4]), r[5], r[6]) if r else None


@dataclass(slots=True)
class ModelRow:
    version: int
    kind: str
    created_at: float
    config: dict[str, Any]
    metrics: dict[str, Any]
    weights: bytes | None
    seq: int | None


class Models:
    """Versioned trained models (weights blob + config + metrics), numbered per kind (hgt 1, 2, …; fusion 1, …)."""

    _COLS = "version, kind, created_at, config, metrics, weights, seq"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(
        self, kind: str, config: dict[str, Any], metrics: dict[str, Any], weights: bytes | None, seq: int | None = None
    ) -> int:
        """The kind's next version; call inside the caller's write transaction (the number is read, then taken)."""
        version = (self.latest_version(kind) or 0) + 1
        self.conn.execute(
            "INSERT INTO models(kind, version, created_at, config, metrics, weights, seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, version, time.time(), _dumps(config), _dumps(metrics), weights, seq),
        )
        return version

    def set_seq(self, kind: str, version: int, seq: int) -> None:
        self.conn.execute("UPDATE models SET seq = ? WHERE kind = ? AND version = ?", (seq, kind, version))

    def _row(self, r: tuple[Any, ...] | None) -> ModelRow | None:
        if r is None:
            return None
        return ModelRow(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5], r[6])

    def get(self, kind: str, version: int) -> ModelRow | None:
        return self._row(self.conn.execute(
            f"SELECT {self._COLS} FROM models WHERE kind = ? AND version = ?", (kind, version)
        ).fetchone())

    def latest(self, kind: str) -> ModelRow | None:
        return self._row(
            self.conn.execute(
                f"SELECT {self._COLS} FROM models WHERE kind = ? ORDER BY version DESC LIMIT 1", (kind,)
            ).fetchone()
        )

    def latest_version(self, kind: str) -> int | None:
        r = self.conn.execute("SELECT max(version) FROM models WHERE kind = ?", (kind,)).fetchone()
        return r[0]

    def list(self, kind: str | None = None) -> builtins.list[dict[str, Any]]:
        q = "SELECT version, kind, created_at, metrics FROM models"
        args: tuple[Any, ...] = ()
        if kind:
            q += " WHERE kind = ?"
            args = (kind,)
        return [
            {"version": v, "kind": k, "created_at": c, "metrics": json.loads(m)}
            for v, k, c, m in self.conn.execute(q + " ORDER BY id", args)
        ]


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
            (job_id, kind, _dumps(params), time.time(), this_process()),
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
            fields["result"] = _dumps(fields["result"])
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

    def active(self, kind: str) -> dict[str, Any] | None:
        r = self.conn.execute(
            f"SELECT {self._COLS} FROM jobs WHERE kind = ? AND state IN ('queued', 'running') LIMIT 1", (kind,)
        ).fetchone()
        return self._row(r) if r else None

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
            (time.time(), source, command, _dumps(params or {})),
        )
        return int(cur.lastrowid or 0)

    def record(self, command: str, effect: str, params: dict[str, Any] | None = None, source: str = "") -> int:
        """A command that took effect at once (no flow involved)."""
        now = time.time()
        cur = self.conn.execute(
            "INSERT INTO ops_history(ts, source, command, params, state, effect, applied_at) "
            "VALUES (?, ?, ?, ?, 'applied', ?, ?)",
            (now, source, command, _dumps(params or {}), effect, now),
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
            (component, _dumps(data), time.time()),
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
