"""The projection repositories of the PostgreSQL store (the protocols of ``storage.interface``).

Each method borrows this thread's connection for its statement (``PgConnections``), so inside the store's
transaction they all join it. Bulk writes COPY their rows into a temporary table and upsert from it: a few
round trips per batch, where row-by-row inserts would pay one per row.
"""

from __future__ import annotations

import builtins
import json
import time
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .pg_db import PgConnections
from .pg_schema import MODELS_LOCK
from .db import json_text
from .embeddings import EmbeddingRow
from .projections import ModelRow, RuleRow, sample_by_rank

#: rows per page when a reader walks a whole table
_PAGE = 5000


def _last_per_key(rows: Iterable[tuple[Any, ...]], key_len: int = 1) -> list[tuple[Any, ...]]:
    """One row per key (the last given wins, as a row-by-row upsert would leave it): a single
    ``INSERT ... ON CONFLICT DO UPDATE`` may not touch a row twice."""
    return list({r[:key_len]: r for r in rows}.values())


class PgCheckpoints:
    def __init__(self, db: PgConnections) -> None:
        self.db = db

    def get(self, projection: str) -> int:
        r = self.db.one("SELECT seq FROM checkpoints WHERE projection = %s", (projection,))
        return int(r[0]) if r else 0

    def set(self, projection: str, seq: int) -> None:
        self.db.run(
            "INSERT INTO checkpoints (projection, seq, updated_at) VALUES (%s, %s, %s) ON CONFLICT (projection) "
            "DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
            (projection, seq, time.time()),
        )

    def all(self) -> dict[str, int]:
        return {p: int(s) for p, s in self.db.all("SELECT projection, seq FROM checkpoints ORDER BY projection")}

    def delete(self, projection: str) -> None:
        self.db.run("DELETE FROM checkpoints WHERE projection = %s", (projection,))


class PgProfiles:
    def __init__(self, db: PgConnections) -> None:
        self.db = db

    def upsert_many(self, rows: Iterable[tuple[str, dict[str, Any] | str, int]]) -> int:
        data = _last_per_key((uid, doc if isinstance(doc, str) else json_text(doc), int(seq)) for uid, doc, seq in rows)
        if data:
            self.db.copy_then(
                "profiles_in", "user_id text, profile text, last_seq bigint", data,
                "INSERT INTO profiles (user_id, profile, last_seq, updated_at) "
                "SELECT user_id, profile, last_seq, %s FROM profiles_in ON CONFLICT (user_id) DO UPDATE SET "
                "profile = excluded.profile, last_seq = excluded.last_seq, updated_at = excluded.updated_at",
                (time.time(),),
            )
        return len(data)

    def get(self, user_id: str) -> dict[str, Any] | None:
        r = self.db.one("SELECT profile FROM profiles WHERE user_id = %s", (user_id,))
        return json.loads(r[0]) if r else None

    def get_with_seq(self, user_id: str) -> tuple[dict[str, Any], int] | None:
        r = self.db.one("SELECT profile, last_seq FROM profiles WHERE user_id = %s", (user_id,))
        return (json.loads(r[0]), int(r[1])) if r else None

    def get_many(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        rows = self.db.all("SELECT user_id, profile FROM profiles WHERE user_id = ANY(%s)", (list(user_ids),))
        return {uid: json.loads(p) for uid, p in rows}

    def last_seqs(self, user_ids: Sequence[str]) -> dict[str, int]:
        rows = self.db.all("SELECT user_id, last_seq FROM profiles WHERE user_id = ANY(%s)", (list(user_ids),))
        return {uid: int(s) for uid, s in rows}

    def clear(self) -> None:
        self.db.run("DELETE FROM profiles")

    def count(self) -> int:
        r = self.db.one("SELECT count(*) FROM profiles")
        return int(r[0]) if r else 0

    def ids(self, limit: int = -1, offset: int = 0) -> builtins.list[str]:
        rows = self.db.all(
            "SELECT user_id FROM profiles ORDER BY user_id LIMIT %s OFFSET %s", (None if limit < 0 else limit, offset)
        )
        return [r[0] for r in rows]

    def sample_ids(self, n: int, seed: int = 0) -> builtins.list[str]:
        """A reproducible sample (by rank in user id order, the same picks as the SQLite store's)."""
        return sample_by_rank(self, n, seed)

    def iter_all(self) -> Iterator[tuple[str, dict[str, Any], int]]:
        after = ""
        first = True
        while True:
            rows = self.db.all(
                "SELECT user_id, profile, last_seq FROM profiles WHERE %s OR user_id > %s ORDER BY user_id LIMIT %s",
                (first, after, _PAGE),
            )
            for uid, p, seq in rows:
                yield uid, json.loads(p), int(seq)
            if len(rows) < _PAGE:
                return
            after, first = rows[-1][0], False


_EMBEDDING_UPSERT = (
    "INSERT INTO embeddings (node_type, node_id, vector, dim, model_version, seq, updated_at) "
    "SELECT %s, node_id, vector, %s, model_version, seq, %s FROM embeddings_in "
    "ON CONFLICT (node_type, node_id) DO UPDATE SET vector = excluded.vector, dim = excluded.dim, "
    "model_version = excluded.model_version, seq = excluded.seq, updated_at = excluded.updated_at"
)


class PgEmbeddings:
    def __init__(self, db: PgConnections) -> None:
        self.db = db

    def put_many(self, rows: Iterable[tuple[str, str, np.ndarray, int, int]]) -> int:
        by_shape: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
        for nt, nid, v, mv, seq in rows:
            vec = np.ascontiguousarray(v, dtype=np.float32)
            by_shape.setdefault((nt, int(vec.shape[-1])), []).append((nid, vec.tobytes(), int(mv), int(seq)))
        n = 0
        for (nt, dim), group in by_shape.items():
            n += self._upsert(nt, dim, group)
        return n

    def put_block(self, node_type: str, node_ids: Sequence[str], vectors: np.ndarray, model_version: int,
                  seqs: np.ndarray) -> int:
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[0] != len(node_ids) or len(seqs) != len(node_ids):
            raise ValueError(f"{len(node_ids)} ids, {len(seqs)} seqs and vectors of shape {v.shape} do not match")
        n, dim = v.shape
        blobs = v.view(np.dtype((np.void, 4 * dim))).reshape(n).tolist()
        rows = zip(node_ids, blobs, [int(model_version)] * n, np.asarray(seqs, dtype=np.int64).tolist())
        return self._upsert(node_type, dim, list(rows))

    def _upsert(self, node_type: str, dim: int, rows: list[tuple[Any, ...]]) -> int:
        data = _last_per_key(rows)
        if data:
            self.db.copy_then("embeddings_in", "node_id text, vector bytea, model_version integer, seq bigint",
                              data, _EMBEDDING_UPSERT, (node_type, dim, time.time()))
        return len(rows)

    def get(self, node_type: str, node_id: str) -> EmbeddingRow | None:
        r = self.db.one(
            "SELECT node_type, node_id, vector, model_version, seq, updated_at FROM embeddings "
            "WHERE node_type = %s AND node_id = %s",
            (node_type, node_id),
        )
        if r is None:
            return None
        return EmbeddingRow(r[0], r[1], np.frombuffer(r[2], dtype=np.float32).copy(), int(r[3]), int(r[4]), float(r[5]))

    def get_many(self, node_type: str, node_ids: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self.db.all(
            "SELECT node_id, vector FROM embeddings WHERE node_type = %s AND node_id = ANY(%s)",
            (node_type, list(node_ids)),
        )
        return {nid: np.frombuffer(v, dtype=np.float32).copy() for nid, v in rows}

    def of_version(self, node_type: str, model_version: int) -> Iterator[tuple[str, np.ndarray, int]]:
        after, first = "", True
        while True:
            rows = self.db.all(
                "SELECT node_id, vector, seq FROM embeddings WHERE node_type = %s AND model_version = %s "
                "AND (%s OR node_id > %s) ORDER BY node_id LIMIT %s",
                (node_type, model_version, first, after, _PAGE),
            )
            for nid, blob, seq in rows:
                yield nid, np.frombuffer(blob, dtype=np.float32), int(seq)
            if len(rows) < _PAGE:
                return
            after, first = rows[-1][0], False

    def dim(self, node_type: str) -> int | None:
        r = self.db.one("SELECT dim FROM embeddings WHERE node_type = %s LIMIT 1", (node_type,))
        return int(r[0]) if r else None

    def count(self, node_type: str | None = None) -> int:
        r = self.db.one(
            "SELECT count(*) FROM embeddings WHERE %s OR node_type = %s", (node_type is None, node_type or "")
        )
        return int(r[0]) if r else 0


_RULE_COLS = "name, description, weight, condition, enabled, seq, updated_at"


def _rule(r: tuple[Any, ...]) -> RuleRow:
    return RuleRow(r[0], r[1] or "", float(r[2]), r[3], bool(r[4]), int(r[5]), float(r[6]))


class PgRules:
    def __init__(self, db: PgConnections) -> None:
        self.db = db

    def upsert(self, name: str, description: str, weight: float, condition: str, enabled: bool, seq: int) -> None:
        self.db.run(
            f"INSERT INTO rules ({_RULE_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
            "description = excluded.description, weight = excluded.weight, condition = excluded.condition, "
            "enabled = excluded.enabled, seq = excluded.seq, updated_at = excluded.updated_at",
            (name, description, weight, condition, bool(enabled), seq, time.time()),
        )

    def delete(self, name: str) -> bool:
        return self.db.run("DELETE FROM rules WHERE name = %s", (name,)) > 0

    def clear(self) -> None:
        self.db.run("DELETE FROM rules")

    def list(self) -> builtins.list[RuleRow]:
        return [_rule(r) for r in self.db.all(f"SELECT {_RULE_COLS} FROM rules ORDER BY name")]

    def get(self, name: str) -> RuleRow | None:
        r = self.db.one(f"SELECT {_RULE_COLS} FROM rules WHERE name = %s", (name,))
        return _rule(r) if r else None


_MODEL_COLS = "version, kind, created_at, config, metrics, weights, seq"


def _model(r: tuple[Any, ...] | None) -> ModelRow | None:
    if r is None:
        return None
    return ModelRow(int(r[0]), r[1], float(r[2]), json.loads(r[3]), json.loads(r[4]), r[5], r[6])


class PgModels:
    def __init__(self, db: PgConnections) -> None:
        self.db = db

    def add(
        self, kind: str, config: dict[str, Any], metrics: dict[str, Any], weights: bytes | None, seq: int | None = None
    ) -> int:
        """The kind's next version, numbered under a lock: two trainers on two machines never take one number."""
        with self.db.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MODELS_LOCK,))
            version = (self.latest_version(kind) or 0) + 1
            conn.execute(
                "INSERT INTO models (kind, version, created_at, config, metrics, weights, seq) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (kind, version, time.time(), json_text(config), json_text(metrics), weights, seq),
            )
        return version

    def set_seq(self, kind: str, version: int, seq: int) -> None:
        self.db.run("UPDATE models SET seq = %s WHERE kind = %s AND version = %s", (seq, kind, version))

    def get(self, kind: str, version: int) -> ModelRow | None:
        return _model(self.db.one(f"SELECT {_MODEL_COLS} FROM models WHERE kind = %s AND version = %s", (kind, version)))

    def latest(self, kind: str) -> ModelRow | None:
        return _model(
            self.db.one(f"SELECT {_MODEL_COLS} FROM models WHERE kind = %s ORDER BY version DESC LIMIT 1", (kind,))
        )

    def latest_version(self, kind: str) -> int | None:
        r = self.db.one("SELECT max(version) FROM models WHERE kind = %s", (kind,))
        return int(r[0]) if r and r[0] is not None else None

    def list(self, kind: str | None = None) -> builtins.list[dict[str, Any]]:
        rows = self.db.all(
            "SELECT version, kind, created_at, metrics FROM models WHERE %s OR kind = %s ORDER BY id",
            (not kind, kind or ""),
        )
        return [{"version": v, "kind": k, "created_at": c, "metrics": json.loads(m)} for v, k, c, m in rows]
