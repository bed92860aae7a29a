"""Small typed accessors for the projection tables (rebuildable from the log)."""

from __future__ import annotations

import builtins

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .db import json_text


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
        data = [(uid, doc if isinstance(doc, str) else json_text(doc), seq, now) for uid, doc, seq in rows]
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
            (kind, version, time.time(), json_text(config), json_text(metrics), weights, seq),
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
