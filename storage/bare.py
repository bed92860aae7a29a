"""Bare SQLite writes, the baselines the benchmarks hold the store's writers against: the store's own
statements executed over rows serialised beforehand, one transaction per call, nothing else."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Iterable, Sequence

from .db import transaction
from .embeddings import EMBEDDING_UPSERT
from .event_store import _INSERT, _row
from .events import Event

Row = tuple[Any, ...]


def event_rows(events: Iterable[Event]) -> list[Row]:
    """The ``events`` rows exactly as :meth:`EventStore.append` writes them (receipt time 0)."""
    return [_row(e, 0.0) for e in events]


def insert_events(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """One ``executemany`` of the log's insert over prepared rows, in one transaction."""
    with transaction(conn):
        conn.executemany(_INSERT, rows)


def upsert_embeddings(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """One ``executemany`` of the embeddings upsert over prepared rows (node type, id, float32 blob, dim,
    model version, seq, time), in one transaction."""
    with transaction(conn):
        conn.executemany(EMBEDDING_UPSERT, rows)


def open_bare_log(path: Path) -> sqlite3.Connection:
    """A bare ``events`` table of the log's columns (the seq key alone: no other index, no conflict
    clause), WAL and synchronous=NORMAL as the store's: what appending costs SQLite at the least."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE events(seq INTEGER PRIMARY KEY, event_id, type, user_id, target_id, ts, payload, "
                 "version, recorded_at)")
    return conn


def insert_bare_events(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """One ``executemany`` of rows in the store's insert order of columns into :func:`open_bare_log`'s table."""
    with transaction(conn):
        conn.executemany("INSERT INTO events(event_id, type, user_id, target_id, ts, payload, version, recorded_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
