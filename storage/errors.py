"""What a failed statement raises, whichever backend the store is on, and which failures mean the store
cannot be reached or written at the moment (the machine's state, not a bug).

The PostgreSQL driver is loaded only when such a store is opened (``storage.pg_db``), so its errors are
mapped there, where they leave the backend, to :class:`BackendError`: a SQLite deployment never imports
it, and callers catch one set of classes whatever the backend."""

from __future__ import annotations

import sqlite3

from .db import sqlite_unwritable_reason


class BackendError(Exception):
    """A statement failed on a store whose driver the backend wraps (PostgreSQL); the driver's own error
    is the ``__cause__``. ``unwritable``: what keeps the store from being written or reached, when the
    error says so; ``transient``: the server could not be reached or dropped the connection, so the same
    work succeeds once it is back."""

    def __init__(self, message: str, unwritable: str | None = None, transient: bool = False) -> None:
        super().__init__(message, unwritable, transient)  # all in args: the error pickles whole
        self.unwritable = unwritable
        self.transient = transient

    def __str__(self) -> str:
        return str(self.args[0])


class StoreUnreachable(BackendError):
    """The PostgreSQL server cannot be reached (down, restarting, wrong address); the message names it
    with its password redacted."""

    def __init__(self, message: str, unwritable: str | None = None, transient: bool = True) -> None:
        super().__init__(message, message if unwritable is None else unwritable, transient)


#: what a failed statement raises (SQLite locked past the busy timeout, disk full, PostgreSQL gone ...):
#: callers that retry catch this
DatabaseError = (sqlite3.Error, BackendError)


def unwritable_reason(err: BaseException) -> str | None:
    """What keeps the store from being written or reached, when ``err`` says so; None for any other error.

    For PostgreSQL: a connection that failed or broke (the server down or restarting), a server that
    refuses writes (read-only, disk full). These pass by themselves once the server is back.
    """
    if isinstance(err, BackendError):
        return err.unwritable
    return sqlite_unwritable_reason(err)


def is_transient(err: BaseException) -> bool:
    """The PostgreSQL server could not be reached or dropped the connection (down, restarting, a network
    cut): the same work succeeds once it is back. SQLite failures are never transient here."""
    return isinstance(err, BackendError) and err.transient
