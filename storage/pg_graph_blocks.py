"""The PostgreSQL table of graph-column blocks (``storage.graph_columns``), as ``storage.graph_blocks``
keeps them in SQLite."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from pydantic_core import from_json

from .columns import EventBatch
from .graph_columns import (
    ATTRIBUTE_KINDS, KINDS, BlockProjection, BlockRow, GraphColumnsData, NodeCodes, concat_blocks,
)
from .pg_db import PgConnections
from .pg_schema import APPEND_LOCK


class PgGraphBlocks(BlockProjection):
    """The blocks of one store, and its writer's node dictionary (:class:`NodeCodes`)."""

    def __init__(self, db: PgConnections, codes: NodeCodes, read_columns: Callable[..., Iterator[EventBatch]]) -> None:
        self.db = db
        self.codes = codes
        self._read_columns = read_columns

    # ---------------------------------------------------------------- what NodeCodes asks (BlockTable)

    def newest(self) -> tuple[int, int, int] | None:
        r = self.db.one("SELECT first_seq, last_seq, token FROM graph_blocks ORDER BY first_seq DESC LIMIT 1")
        return (int(r[0]), int(r[1]), int(r[2])) if r else None

    def has(self, first_seq: int, token: int) -> bool:
        return self.db.one("SELECT 1 FROM graph_blocks WHERE first_seq = %s AND token = %s", (first_seq, token)) is not None

    def new_nodes_after(self, first_seq: int) -> list[tuple[int, int, str]]:
        rows = self.db.all("SELECT first_seq, token, new_nodes FROM graph_blocks WHERE first_seq > %s ORDER BY first_seq",
                           (first_seq,))
        return [(int(f), int(t), str(n)) for f, t, n in rows]

    def insert(self, row: BlockRow) -> None:
        self.db.run("INSERT INTO graph_blocks (first_seq, last_seq, token, new_nodes, kind, subj, tgt, seq, ts) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", row)

    # ---------------------------------------------------------------- readers

    def read(self, upto: int | None = None) -> GraphColumnsData:
        """The graph events of the blocks' gapless prefix from seq 1, up to ``upto`` at most (whole
        blocks), with the attribute events' payloads."""
        rows = self.db.all(
            "SELECT first_seq, last_seq, new_nodes, kind, subj, tgt, seq, ts FROM graph_blocks WHERE last_seq <= %s "
            "ORDER BY first_seq", (2**62 if upto is None else upto,),
        )
        data = concat_blocks((int(r[0]), int(r[1]), str(r[2]), *(bytes(b) for b in r[3:])) for r in rows)  # type: ignore[misc]
        if data.upto:
            got = self.db.one(
                "SELECT array_agg(seq ORDER BY seq), string_agg(payload, ',' ORDER BY seq) FROM events "
                "WHERE type = ANY(%s) AND seq <= %s", (list(ATTRIBUTE_KINDS), data.upto),
            )
            if got and got[0]:
                data.attr_seq, data.attr_payload = np.asarray(got[0], np.int64), from_json(f"[{got[1]}]")
        return data

    # ---------------------------------------------------------------- what BlockProjection asks

    def clear(self) -> None:
        self.db.run("DELETE FROM graph_blocks")

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        with self.db.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))  # no append meanwhile
            yield conn

    def _log_end(self) -> int:
        top = self.db.one("SELECT coalesce(max(seq), 0) FROM events")
        return int(top[0]) if top else 0

    def _log_columns(self, start: int, last: int, chunk: int) -> Iterable[Any]:
        return self._read_columns(start, last, KINDS, (), chunk)

    def _block_sizes(self) -> list[tuple[int, int, int]]:
        return [(int(f), int(la), int(n)) for f, la, n in self.db.all(
            "SELECT first_seq, last_seq, octet_length(kind) FROM graph_blocks ORDER BY first_seq")]

    def _rows_between(self, lo: int, hi: int) -> list[tuple[int, int, str, bytes, bytes, bytes, bytes, bytes]]:
        return [(int(r[0]), int(r[1]), str(r[2]), *(bytes(b) for b in r[3:])) for r in self.db.all(  # type: ignore[misc]
            "SELECT first_seq, last_seq, new_nodes, kind, subj, tgt, seq, ts FROM graph_blocks "
            "WHERE first_seq >= %s AND last_seq <= %s ORDER BY first_seq", (lo, hi))]

    def _delete_from(self, lo: int, last_first: int) -> None:
        self.db.run("DELETE FROM graph_blocks WHERE first_seq >= %s AND first_seq <= %s", (lo, last_first))
