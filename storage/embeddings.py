"""The embeddings table: each graph node's latest vector (float32 blob), the model version and the seq
it reflects; written in blocks by full passes and row by row by the live refresher."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from itertools import repeat
from typing import Iterable, Iterator, Sequence

import numpy as np


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


#: the block upsert: row j of the block is element j of the ids' JSON array, bytes [j*w, (j+1)*w) of
#: the vectors and characters [j*21, (j+1)*21) of the seqs. In key order: each row lands next to the
#: previous one in the primary-key index (in arrival order SQLite walks the index at random, ~40 %
#: slower measured); then by position, so of an id given twice the last one wins, as row by row. (The
#: ORDER BY also tells SQLite's grammar the upsert's ON from a join's.)
_BLOCK_UPSERT = (
    "INSERT INTO embeddings(node_type, node_id, vector, dim, model_version, seq, updated_at) "
    "SELECT ?1, j.value, substr(?2, j.key * ?3 + 1, ?3), ?4, ?5, CAST(substr(?6, j.key * 21 + 1, 21) AS INTEGER), ?7 "
    "FROM json_each(?8) AS j ORDER BY j.value, j.key ON CONFLICT(node_type, node_id) DO UPDATE SET "
    "vector = excluded.vector, dim = excluded.dim, model_version = excluded.model_version, "
    "seq = excluded.seq, updated_at = excluded.updated_at"
)
_SEQ_WIDTH = 21

#: per user with exactly one event of the given types past ``after``: that event's append time and, if
#: the user's stored embedding reflects it (its seq is at least the event's), the time that row was written
_USER_LAGS = (
    "WITH one AS (SELECT user_id, min(seq) AS seq, min(recorded_at) AS recorded_at FROM events "
    "WHERE seq > ? AND user_id IS NOT NULL AND type IN (SELECT value FROM json_each(?)) "
    "GROUP BY user_id HAVING count(*) = 1) "
    "SELECT one.recorded_at, CASE WHEN e.seq >= one.seq THEN e.updated_at END FROM one "
    "LEFT JOIN embeddings AS e ON e.node_type = 'user' AND e.node_id = one.user_id WHERE one.seq <= ?"
)


@dataclass(frozen=True)
class EmbeddingLags:
    """Event append -> embedding row written, per event: ``recorded_at`` (append time) and
    ``embedded_at`` (NaN: no row reflects the event yet)."""

    recorded_at: np.ndarray
    embedded_at: np.ndarray

    @property
    def seconds(self) -> np.ndarray:
        """The lag of each embedded event."""
        done = ~np.isnan(self.embedded_at)
        return self.embedded_at[done] - self.recorded_at[done]

    def pending_ages(self, now: float) -> np.ndarray:
        """How long each event not yet embedded has waited by ``now``."""
        return now - self.recorded_at[np.isnan(self.embedded_at)]


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
        ``vectors`` is [n, dim]. One statement for the whole block: SQLite walks the ids (a JSON array)
        and cuts each row's blob and seq out of two buffers itself, so neither Python nor the driver
        does anything per row (binding seven values a row cost as much as the B-tree work)."""
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[0] != len(node_ids) or len(seqs) != len(node_ids):
            raise ValueError(f"{len(node_ids)} ids, {len(seqs)} seqs and vectors of shape {v.shape} do not match")
        n, dim = v.shape
        if n == 0:
            return 0
        id_list = list(node_ids)
        ids = json.dumps(id_list, ensure_ascii=False)
        seq = np.asarray(seqs, dtype=np.int64)
        if "\\u0000" in ids or dim == 0:
            # SQLite's JSON strings end at a NUL; a zero-width vector has no blob to cut: row by row
            return self.put_many(zip(repeat(node_type), id_list, v, repeat(model_version), seq.tolist()))
        # seqs as fixed-width decimal digits in a blob: substr of a blob is O(1) (of text it counts
        # characters from the start), and CAST reads a blob's bytes as text
        digits = np.char.zfill(seq.astype(f"S{_SEQ_WIDTH}"), _SEQ_WIDTH).tobytes()
        self.conn.execute(_BLOCK_UPSERT, (node_type, v.tobytes(), 4 * dim, dim, int(model_version), digits,
                                          time.time(), ids))
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

    def user_lags(self, after_seq: int, upto_seq: int, types: Sequence[str]) -> EmbeddingLags:
        """Event append -> user embedding written, for the events ``after_seq < seq <= upto_seq`` of
        ``types`` whose user has no other such event past ``after_seq`` (up to now): only then is the
        user's one stored row (each write replaces the last) the write that covered that event."""
        rows = self.conn.execute(_USER_LAGS, (after_seq, json.dumps(list(types)), upto_seq)).fetchall()
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 2)  # NULL -> NaN
        return EmbeddingLags(arr[:, 0].copy(), arr[:, 1].copy())

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
