"""What only the PostgreSQL store does: its schema version table and migrations, and a server restart
under an open store."""

from __future__ import annotations

import psycopg

from pg_server import PostgresServer
from storage import Event, PostgresUrl, open_store
from storage.errors import BackendError
from storage.pg_schema import MIGRATIONS, SCHEMA_VERSION


def test_a_database_at_version_1_is_migrated_in_place(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(MIGRATIONS[0])  # the schema as version 1 left it, with a job and an event in it
        conn.execute("CREATE TABLE ups_schema (version integer NOT NULL)")
        conn.execute("INSERT INTO ups_schema VALUES (1)")
        conn.execute("INSERT INTO jobs (id, kind, state, params, created_at) VALUES ('j1', 'graph.refresh', 'queued', '{}', 1)")
        conn.execute("INSERT INTO events VALUES (1, 'e1', 'call', 'A', 'B', 1.0, '{}', 1, 1.0)")
    with open_store(pg_url) as s:
        assert s.jobs.get("j1")["created_by"] is None  # type: ignore[index]
        assert s.jobs.claim("j1", "w")["claimed_by"] == "w"  # type: ignore[index]
        assert s.append([Event("e1", "call", 1.0, "A", "B", {}), Event("e2", "call", 2.0, "A", "B", {})]).new == [(2, "e2")]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM ups_schema").fetchall() == [(SCHEMA_VERSION,)]


def test_an_open_store_works_again_after_a_server_restart(pg_server: PostgresServer, pg_url: str) -> None:
    """A restart breaks every open connection: a store that waits out outages (the dataflow's) carries on
    by itself; a plain one (the API's) fails a statement or so, then works without being reopened."""
    waiting = open_store(pg_url, wait_out="the test")
    plain = open_store(PostgresUrl(pg_url))
    try:
        waiting.append([Event("e1", "call", 1.0, "A", "B", {})])
        assert plain.count() == 1
        pg_server.restart()
        assert waiting.append([Event("e2", "call", 2.0, "A", "B", {})]).new == [(2, "e2")]
        failures = 0
        for _ in range(5):
            try:
                assert plain.count() == 2
                break
            except BackendError as err:  # the server's error, as the store maps it
                assert err.transient
                failures += 1
        assert failures <= 1 and plain.count() == 2
    finally:
        waiting.close()
        plain.close()
