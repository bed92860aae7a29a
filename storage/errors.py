"""What a failed statement raises, whichever backend the store is on, and which failures mean the store
cannot be reached or written at the moment (the machine's state, not a bug)."""

from __future__ import annotations

import sqlite3

import psycopg

from .db import sqlite_unwritable_reason

#: what a failed statement raises (SQLite locked past the busy timeout, disk full, PostgreSQL gone ...):
#: callers that retry catch this
DatabaseError = (sqlite3.Error, psycopg.Error)


def unwritable_reason(err: BaseException) -> str | None:
    """What keeps the store from being written or reached, when ``err`` says so; None for any other error.

    For PostgreSQL: a connection that failed or broke (the server down or restarting), a server that
    refuses writes (read-only, disk full). These pass by themselves once the server is back.
    """
    if isinstance(err, psycopg.Error):
        from config.db_location import PostgresUrl

        if isinstance(err, (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction,
                            psycopg.errors.DiskFull, psycopg.errors.AdminShutdown)):
            return PostgresUrl.redact_text(str(err).strip() or type(err).__name__)
        return None
    return sqlite_unwritable_reason(err)


def is_transient(err: BaseException) -> bool:
    """The PostgreSQL server could not be reached or dropped the connection (down, restarting, a network
    cut): the same work succeeds once it is back. SQLite failures are never transient here."""
    return isinstance(err, psycopg.OperationalError)
