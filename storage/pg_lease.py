"""Leases on a PostgreSQL store: session advisory locks that name their holder, for processes that share
nothing but the database URL (the processes of a Bytewax cluster on different hosts).

A lease is the advisory lock ``(LEASE_NS, slot)`` taken on a connection of its own and held for as long
as that connection is open: the server drops it when the holder's session ends, however it ends (a
SIGKILLed process's socket is closed by its kernel), so no stale record or recycled pid can block the
next holder. The holder's record (JSON) goes into the ``status`` table as ``lease.<slot>`` with the
backend pid of the holding session; a record counts only while that session holds the lock, so one left
behind by a killed holder is ignored.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg

from config.db_location import PostgresUrl

from .pg_db import CONNECT_TIMEOUT_S, StoreUnreachable, driver_errors_mapped

#: the first key of every lease's advisory lock (the second is the slot); the log's locks use one key
LEASE_NS = 0x5550_5305

_PUT = (
    "INSERT INTO status (component, data, updated_at) VALUES (%s, %s, %s) ON CONFLICT (component) "
    "DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at"
)
# the slots held now in this database, each with its holder's record when the holding session wrote one
_HELD = (
    "SELECT k.objid::bigint, s.data FROM pg_locks k LEFT JOIN status s ON s.component = 'lease.' || k.objid::text "
    "AND s.data::jsonb ->> 'backend_pid' = k.pid::text "
    "WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 2 AND k.classid::bigint = %s "
    "AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _connect(url: PostgresUrl) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url.secret, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S))
    except psycopg.OperationalError as err:
        raise StoreUnreachable(f"PostgreSQL at {url} is unreachable: {url.redact_text(str(err).strip())}") from None


class PgLease:
    """The lease on ``slot``: :meth:`take` tries once, :meth:`release` (or the process's end) lets go."""

    def __init__(self, url: PostgresUrl, slot: int) -> None:
        self.url = url
        self.slot = slot
        self._conn: psycopg.Connection[Any] | None = None

    def take(self, record: dict[str, Any]) -> bool:
        """Take the lease unless another session holds it; ``record`` names this holder to the others."""
        conn = _connect(self.url)
        with driver_errors_mapped():
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s), pg_backend_pid()", (LEASE_NS, self.slot)).fetchone()
            if not row or not row[0]:
                conn.close()
                return False
            conn.execute(_PUT, (f"lease.{self.slot}", json.dumps({**record, "backend_pid": row[1]}), time.time()))
        self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("DELETE FROM status WHERE component = %s", (f"lease.{self.slot}",))
            except psycopg.Error:
                pass  # the session is gone already, and its lock with it
            self._conn.close()  # ending the session drops the lock
            self._conn = None


def lease_holders(url: PostgresUrl) -> dict[int, dict[str, Any] | None]:
    """Every slot leased now: its holder's record, or None while the new holder has not written it yet."""
    with _connect(url) as conn, driver_errors_mapped():
        rows = conn.execute(_HELD, (LEASE_NS,)).fetchall()
    return {int(slot): json.loads(data) if data else None for slot, data in rows}
