"""The SQLite table of graph-column blocks (``storage.graph_columns``): written by appends, read whole
by the graph build."""

from __future__ import annotations

import sqlite3
from typing import Any, ContextManager, Iterable

from pydantic_core import from_json

from .columns import _ints, scan_columns
from .db import transaction
from .graph_columns import (
    ATTRIBUTE_KINDS, KINDS, BlockProjection, BlockRow, GraphColumnsData, NodeCodes, concat_blocks,
)

_COLUMNS = "first_seq, last_seq, new_nodes, kind, subj, tgt, seq, ts"


class GraphBlocks(BlockProjection):
    """The blocks of one store, and its writer's node dictionary (:class:`NodeCodes`)."""

    def __init__(self, conn: sqlite3.Connection, codes: NodeCodes) -> None:
        self.conn = conn
        self.codes = codes

    # ---------------------------------------------------------------- what NodeCodes asks (BlockTable)

    def newest(self) -> tuple[int, int, int] | None:
        r = self.conn.execute("SELECT first_seq, last_seq, token FROM graph_blocks ORDER BY first_seq DESC LIMIT 1").fetchone()
        return (int(r[0]), int(r[1]), int(r[2])) if r else None

    def log_end_and_newest(self) -> tuple[int, tuple[int, int, int] | None]:
        """The log's last seq (0: empty) and :meth:`newest`, in one statement (every append asks both)."""
        r = self.conn.execute(
            "SELECT (SELECT coalesce(max(seq), 0) FROM events), b.first_seq, b.last_seq, b.token FROM (SELECT 1) "
            "LEFT JOIN (SELECT first_seq, last_seq, token FROM graph_blocks ORDER BY first_seq DESC LIMIT 1) AS b"
        ).fetchone()
        return int(r[0]), (int(r[1]), int(r[2]), int(r[3])) if r[1] is not None else None

    def has(self, first_seq: int, token: int) -> bool:
        q = "SELECT 1 FROM graph_blocks WHERE first_seq = ? AND token = ?"
        return self.conn.execute(q, (first_seq, token)).fetchone() is not None

    def new_nodes_after(self, first_seq: int) -> list[tuple[int, int, str]]:
        q = "SELECT first_seq, token, new_nodes FROM graph_blocks WHERE first_seq > ? ORDER BY first_seq"
        return self.conn.execute(q, (first_seq,)).fetchall()

    def insert(self, row: BlockRow) -> None:
        self.conn.execute("INSERT INTO graph_blocks (first_seq, last_seq, token, new_nodes, kind, subj, tgt, seq, ts) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

    # ---------------------------------------------------------------- readers

    def read(self, upto: int | None = None) -> GraphColumnsData:
        """The graph events of the blocks' gapless prefix from seq 1, up to ``upto`` at most (whole
        blocks: a block past it is left to the log), with the attribute events' payloads."""
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM graph_blocks WHERE last_seq <= ? ORDER BY first_seq",
            (2**62 if upto is None else upto,),
        )
        data = concat_blocks(rows)
        if data.upto:
            # one string per column (seq order from the subquery): no row objects, and the payloads
            # parsed in one call as one JSON array
            marks = ",".join("?" * len(ATTRIBUTE_KINDS))
            seqs, payloads = self.conn.execute(
                "SELECT group_concat(seq), group_concat(payload, ',') FROM (SELECT seq, payload FROM events "
                f"WHERE type IN ({marks}) AND seq <= ? ORDER BY seq)",
                (*ATTRIBUTE_KINDS, data.upto),
            ).fetchone()
            if seqs:
                data.attr_seq, data.attr_payload = _ints(seqs), from_json(f"[{payloads}]")
        return data

    # ---------------------------------------------------------------- what BlockProjection asks

    def clear(self) -> None:
        self.conn.execute("DELETE FROM graph_blocks")

    def _locked(self) -> ContextManager[Any]:
        return transaction(self.conn)  # SQLite's write lock: no append meanwhile

    def _log_end(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

    def _log_columns(self, start: int, last: int, chunk: int) -> Iterable[Any]:
        return scan_columns(self.conn, start, last, KINDS, (), chunk)

    def _block_sizes(self) -> list[tuple[int, int, int]]:
        return self.conn.execute("SELECT first_seq, last_seq, length(kind) FROM graph_blocks ORDER BY first_seq").fetchall()

    def _rows_between(self, lo: int, hi: int) -> list[tuple[int, int, str, bytes, bytes, bytes, bytes, bytes]]:
        return self.conn.execute(f"SELECT {_COLUMNS} FROM graph_blocks WHERE first_seq >= ? AND last_seq <= ? "
                                 "ORDER BY first_seq", (lo, hi)).fetchall()

    def _delete_from(self, lo: int, last_first: int) -> None:
        self.conn.execute("DELETE FROM graph_blocks WHERE first_seq >= ? AND first_seq <= ?", (lo, last_first))
