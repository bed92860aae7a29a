"""Where the store is: a file path keeps SQLite, a postgresql:// URL selects PostgreSQL; a URL's password
is never shown (settings, ``ups config``, errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import Settings
from pg_server import PostgresServer
from storage import EventStore, PostgresUrl, open_store, parse_db
from storage.pg_store import PgStore

SECRET = "pa55-w0rd-never-shown"


def _ups(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ups", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.getcwd(), **(env or {})},
    )


def test_a_url_selects_postgresql_and_a_path_sqlite(tmp_path: Path, pg_url: str) -> None:
    with open_store(pg_url) as pg, open_store(tmp_path / "x.db") as lite:
        assert isinstance(pg, PgStore) and isinstance(lite, EventStore)
        assert str(pg.location) == pg_url and lite.location == tmp_path / "x.db"
    assert Settings(db=pg_url).db == PostgresUrl(pg_url)
    assert Settings(db="postgres://u@h/ups").db == PostgresUrl("postgres://u@h/ups")
    assert Settings(db=str(tmp_path / "x.db")).db == tmp_path / "x.db"


def test_a_password_is_redacted_wherever_the_url_is_shown() -> None:
    url = parse_db(f"postgresql://ups:{SECRET}@db.example:6543/ups?sslmode=require&password={SECRET}")
    assert isinstance(url, PostgresUrl)
    for shown in (str(url), repr(url), f"{url}", str(Settings(db=url.secret).db)):
        assert SECRET not in shown and "db.example:6543/ups" in shown
    assert url.secret.count(SECRET) == 2  # the driver still gets it
    assert Settings(db=url.secret).state_dir == Path("var/db.example-6543-ups.state")
    # child processes get settings as JSON: the URL whole
    assert Settings.model_validate(Settings(db=url.secret).model_dump(mode="json")).db == url


@pytest.mark.parametrize("bad, message", [
    ("postgresql://u@h:5432", "names no database"),
    ("postgresql://u@h:port/x", "port that is not a number"),
    ("mysql://u:pw@h/x", "only postgresql:// URLs or file paths"),
])
def test_a_bad_location_is_refused_by_name(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(db=bad)


def test_ups_config_shows_the_url_without_its_password() -> None:
    r = _ups("config", "--db", f"postgresql://ups:{SECRET}@127.0.0.1:5999/ups")
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["db"] == "postgresql://ups:***@127.0.0.1:5999/ups" and SECRET not in r.stdout


def test_an_unreachable_server_is_one_clear_line_without_the_password(pg_server: PostgresServer) -> None:
    # a port nothing listens on (the session's server's port + 1 is as good as any free one)
    url = f"postgresql://ups:{SECRET}@127.0.0.1:{pg_server.port + 1}/ups"
    r = _ups("stats", "--db", url)
    assert r.returncode == 1
    assert "unreachable" in r.stderr and "127.0.0.1" in r.stderr and "Traceback" not in r.stderr
    assert SECRET not in r.stderr + r.stdout


def test_a_missing_database_is_named(pg_server: PostgresServer) -> None:
    r = _ups("stats", "--db", pg_server.url("no_such_db"))
    assert r.returncode == 1 and 'database "no_such_db" does not exist' in r.stderr
