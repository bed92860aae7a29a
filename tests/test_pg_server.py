"""The test harness's throw-away PostgreSQL: a fresh database per test, and a restart keeps the data."""

from __future__ import annotations

import psycopg

from pg_server import PostgresServer


def test_each_test_gets_an_empty_database_that_survives_a_restart(pg_server: PostgresServer, pg_url: str) -> None:
    assert pg_url.startswith("postgresql://") and "127.0.0.1" in pg_url
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        assert conn.execute("SHOW server_version").fetchone()[0].split(".")[0].isdigit()
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (42)")
    pg_server.restart()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
    assert pg_server.create_database() != pg_url
