"""The PostgreSQL table of graph-column blocks (``storage.graph_columns``), as ``storage.graph_blocks``
keeps them in SQLite."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
from pydantic_core import from_json

from .columns import EventBatch
from .graph_columns import (
    ATTRIBUTE_KINDS, KINDS, BlockRow, GraphColumnsData, NodeCodes, code_log, compaction_runs, concat_blocks, merge_blocks,
)
from .pg_db import PgConnections
from .pg_schema import APPEND_LOCK


class PgGraphBlocks:
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

    def covered(self) -> int:
        """The seq up to which the blocks cover the log (0: none)."""
        top = self.newest()
        return top[1] if top else 0

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

    # ---------------------------------------------------------------- the projection step

    def catch_up(self, chunk: int = 500_000, progress: Callable[[int], None] | None = None) -> int:
        """Code the log past the blocks, one transaction per ``chunk`` seqs; the seq then covered (again
        while appends came meanwhile, which find the blocks behind the log and write none)."""

        def write(step: Callable[[], bool]) -> bool:
            with self.db.transaction() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))  # no append meanwhile
                done = step()
            if progress:
                progress(self.covered())
            return done

        while True:
            start = self.covered()
            top = self.db.one("SELECT coalesce(max(seq), 0) FROM events")
            last = int(top[0]) if top else 0
            if start >= last:
                return start
            code_log(self, self.codes, start, self._read_columns(start + 1, last, KINDS, (), chunk), write)
            if self.covered() <= start:  # an event that cannot be coded: the log is read past it
                return start

    def compact(self, small: int = 50_000, target: int = 1_000_000) -> int:
        """Merge runs of small blocks into blocks of up to ``target`` events, one transaction a run; how
        many blocks went."""
        sizes = [(int(f), int(la), int(n)) for f, la, n in self.db.all(
            "SELECT first_seq, last_seq, octet_length(kind) FROM graph_blocks ORDER BY first_seq")]
        gone = 0
        for lo, hi in compaction_runs(sizes, small, target):
            with self.db.transaction() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))  # no append meanwhile
                rows = [(int(r[0]), int(r[1]), str(r[2]), *(bytes(b) for b in r[3:])) for r in self.db.all(
                    "SELECT first_seq, last_seq, new_nodes, kind, subj, tgt, seq, ts FROM graph_blocks "
                    "WHERE first_seq >= %s AND last_seq <= %s ORDER BY first_seq", (lo, hi))]
                if len(rows) < 2 or rows[0][0] != lo or rows[-1][1] != hi:
                    continue  # changed meanwhile (a rebuild)
                merged = merge_blocks(rows)  # type: ignore[arg-type]
                self.db.run("DELETE FROM graph_blocks WHERE first_seq >= %s AND first_seq <= %s", (lo, rows[-1][0]))
                self.insert(merged)
                gone += len(rows) - 1
        return gone

    def clear(self) -> None:
        self.db.run("DELETE FROM graph_blocks")

    def rebuild(self, chunk: int = 500_000, progress: Callable[[int], None] | None = None) -> int:
        """Code the whole log anew (what a replay does to every projection)."""
        with self.db.transaction():
            self.clear()
        return self.catch_up(chunk, progress)
