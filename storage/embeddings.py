"""The embeddings table: each graph node's latest vector (float32 blob), the model version and the seq
it reflects; written in blocks by full passes and row by row by the live refresher."""

from __future__ import annotations

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
