"""The SQLite table of graph-column blocks (``storage.graph_columns``): written by appends, read whole
by the graph build."""

from __future__ import annotations

import sqlite3
from typing import Callable

from pydantic_core import from_json

from .columns import _ints, scan_columns
from .db import transaction
from .graph_columns import (
    ATTRIBUTE_KINDS, KINDS, BlockRow, GraphColumnsData, NodeCodes, code_log, compaction_runs, concat_blocks, merge_blocks,
)

_COLUMNS = "first_seq, last_seq, new_nodes, kind, subj, tgt, seq, ts"


class GraphBlocks:
    """The blocks of one store, and its writer's node dictionary (:class:`NodeCodes`)."""

    def __init__(self, conn: sqlite3.Connection, codes: NodeCodes) -> None:
        self.conn = conn
        self.codes = codes

    # ---------------------------------------------------------------- what NodeCodes asks (BlockTable)

    def newest(self) -> tuple[int, int, int] | None:
        r = self.conn.execute("SELECT first_seq, last_seq, token FROM graph_blocks ORDER BY first_seq DESC LIMIT 1").fetchone()
        return (int(r[0]), int(r[1]), int(r[2])) if r else None

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

    def covered(self) -> int:
        """The seq up to which the blocks cover the log (0: none)."""
        top = self.newest()
        return top[1] if top else 0

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

    # ---------------------------------------------------------------- the projection step

    def catch_up(self, chunk: int = 500_000, progress: Callable[[int], None] | None = None) -> int:
        """Code the log past the blocks (a store written before them, an append that wrote none), one
        transaction per ``chunk`` seqs; the seq then covered (again while appends came meanwhile, which
        find the blocks behind the log and write none)."""

        def write(step: Callable[[], bool]) -> bool:
            with transaction(self.conn):  # the write lock: no append meanwhile
                done = step()
            if progress:
                progress(self.covered())
            return done

        while True:
            start = self.covered()
            last = int(self.conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
            if start >= last:
                return start
            code_log(self, self.codes, start, scan_columns(self.conn, start + 1, last, KINDS, (), chunk), write)
            if self.covered() <= start:  # an event that cannot be coded: the log is read past it
                return start

    def compact(self, small: int = 50_000, target: int = 1_000_000) -> int:
        """Merge runs of small blocks (a flow appending a few events at a time writes one each) into
        blocks of up to ``target`` events, one transaction a run; how many blocks went."""
        sizes = self.conn.execute("SELECT first_seq, last_seq, length(kind) FROM graph_blocks ORDER BY first_seq").fetchall()
        gone = 0
        for lo, hi in compaction_runs(sizes, small, target):
            with transaction(self.conn):
                rows = self.conn.execute(f"SELECT {_COLUMNS} FROM graph_blocks WHERE first_seq >= ? AND last_seq <= ? "
                                         "ORDER BY first_seq", (lo, hi)).fetchall()
                if len(rows) < 2 or rows[0][0] != lo or rows[-1][1] != hi:
                    continue  # changed meanwhile (a rebuild)
                merged = merge_blocks(rows)
                self.conn.execute("DELETE FROM graph_blocks WHERE first_seq >= ? AND first_seq <= ?", (lo, rows[-1][0]))
                self.insert(merged)
                gone += len(rows) - 1
        return gone

    def clear(self) -> None:
        self.conn.execute("DELETE FROM graph_blocks")

    def rebuild(self, chunk: int = 500_000, progress: Callable[[int], None] | None = None) -> int:
        """Code the whole log anew (what a replay does to every projection)."""
        with transaction(self.conn):
            self.clear()
        return self.catch_up(chunk, progress)
