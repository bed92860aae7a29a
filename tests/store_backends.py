"""The store backends the contract tests run against, and what a test needs to do below the interface
(make a database look as a newer UPS left it, count rows with the raw driver)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage import DbLocation, PostgresUrl

#: the ids of the backends, as the parametrised tests name them
BACKENDS = ("sqlite", "postgresql")


def set_schema_version(db: DbLocation, version: int) -> None:
    """Mark the store's schema as ``version`` (as a newer UPS would have left it)."""
    if isinstance(db, PostgresUrl):
        import psycopg

        with psycopg.connect(db.secret, autocommit=True) as conn:
            conn.execute("UPDATE ups_schema SET version = %s", (version,))
        return
    raw = sqlite3.connect(Path(db))
    raw.execute(f"PRAGMA user_version={int(version)}")
    raw.commit()
    raw.close()


def raw_event_count(db: DbLocation) -> int:
    """Events in the store, counted with the driver alone (no UPS code in between)."""
    if isinstance(db, PostgresUrl):
        import psycopg

        with psycopg.connect(db.secret) as conn:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
            return int(row[0]) if row else 0
    raw = sqlite3.connect(Path(db))
    try:
        return int(raw.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        raw.close()


def db_arg(db: DbLocation) -> str:
    """The location as a child process is given it: a path, or the URL with its password."""
    return db.secret if isinstance(db, PostgresUrl) else str(db)
