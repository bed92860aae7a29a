"""The event store (append-only log) and the projection tables rebuilt from it: SQLite (a file) or
PostgreSQL (a ``postgresql://`` URL) behind the same interface (``storage.interface``)."""

from config.db_location import DbLocation, PostgresUrl, parse_db

from .db import SCHEMA_VERSION, SchemaTooNew, connect
from .errors import DatabaseError, is_transient, unwritable_reason
from .retrying import retry_transient
from .event_store import AppendResult, EventStore
from .interface import Store
from .operations import this_process
from .events import EVENT_TYPES, INTERACTION_TYPES, Event, InvalidEvent, StoredEvent, validate_event



def open_store(db: DbLocation | str, *, readonly: bool = False, wait_out: str | None = None) -> Store:
    """Open (creating and migrating when missing, unless ``readonly``) the store at ``db``: a SQLite file
    for a path, a PostgreSQL database for a ``postgresql://`` URL.

    ``wait_out`` (what the caller is, for the log) makes a PostgreSQL store wait out an outage: opening and
    every statement outside a transaction are retried with back-off (``storage.retrying``)."""
    where = parse_db(db)
    if isinstance(where, PostgresUrl) and wait_out is not None:
        from .retrying import retrying

        store: Store = retrying(lambda: open_store(where, readonly=readonly), wait_out)
        return store
    if isinstance(where, PostgresUrl):
        from .pg_store import PgStore  # here: a SQLite deployment never loads the driver

        return PgStore(where, readonly=readonly)
    return EventStore(where, readonly=readonly)


def store_exists(db: DbLocation | str) -> bool:
    """Whether there is a store to read at ``db`` (a PostgreSQL database is made on first open, so a URL
    counts as one; whether it answers is found out on opening)."""
    where = parse_db(db)
    return isinstance(where, PostgresUrl) or where.exists()


__all__ = [
    "open_store",
    "store_exists",
    "DatabaseError",
    "unwritable_reason",
    "is_transient",
    "retry_transient",
    "DbLocation",
    "PostgresUrl",
    "parse_db",
    "Store",
    "this_process",
    "SCHEMA_VERSION",
    "SchemaTooNew",
    "connect",
    "AppendResult",
    "EventStore",
    "EVENT_TYPES",
    "INTERACTION_TYPES",
    "Event",
    "InvalidEvent",
    "StoredEvent",
    "validate_event",
]
