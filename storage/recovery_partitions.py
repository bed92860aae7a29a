"""Reading a Bytewax recovery partition: an SQLite file of Bytewax's own schema (0.21), which the flow
checks before a run so that damage is reported by file instead of failing inside Bytewax's Rust core."""

from __future__ import annotations

import sqlite3
from pathlib import Path

#: the tables of a Bytewax 0.21 recovery partition
PARTITION_TABLES = frozenset({"parts", "exs", "fronts", "commits", "snaps"})


class PartitionUnreadable(Exception):
    """The file is not a readable recovery partition; the message says what is wrong with it."""


def partition_meta(path: Path) -> tuple[int, int]:
    """(index, count) the partition at ``path`` says it is, after SQLite's ``quick_check`` of the file."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise PartitionUnreadable(f"SQLite finds it corrupt ({check})")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not PARTITION_TABLES <= tables:
                raise PartitionUnreadable("not a Bytewax recovery partition (its tables are missing)")
            rows = conn.execute("SELECT part_index, part_count FROM parts").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        raise PartitionUnreadable(f"SQLite cannot read it ({err})") from None
    if len(rows) != 1:
        raise PartitionUnreadable(f"it describes {len(rows)} partitions, not one")
    return int(rows[0][0]), int(rows[0][1])
