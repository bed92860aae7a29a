"""What a failing store raises, whichever backend, and what a SQLite deployment does not load."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from storage import DatabaseError, PostgresUrl, is_transient, open_store, unwritable_reason
from storage.errors import BackendError
from storage.pg_db import PgConnections, backend_error


def test_a_sqlite_store_loads_neither_the_postgresql_driver_nor_dataframe_libraries(tmp_path: Path) -> None:
    """A process that opens a SQLite store, appends a few events and reads them (the API's rule and
    label writes, the replay's start, ``ups`` commands) does not pay for psycopg, pandas or pyarrow."""
    open_store(tmp_path / "ups.db").close()  # made here: creating its schema takes sqlite_utils, which loads pandas
    script = (
        "import sys\n"
        "import dataflow.runner\n"
        "from storage import Event, open_store\n"
        f"with open_store({str(tmp_path / 'ups.db')!r}) as s:\n"
        "    s.append([Event('e1', 'call', 1.0, 'U1', 'U2', {'duration': 1.0})])\n"
        "    s.append([Event('e2', 'rule.created', 2.0, None, None, {'name': 'r', 'condition': 'True'})])\n"
        "    assert [e.seq for e in s.read()] == [1, 2] and s.graph_columns.covered() == 2\n"
        "print(sorted(m for m in ('psycopg', 'pandas', 'pyarrow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("err", "unwritable", "transient"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True, True),
        (psycopg.errors.DiskFull("could not extend file"), True, True),  # an OperationalError to the driver
        (psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"), True, False),
        (psycopg.errors.UniqueViolation("duplicate key value"), False, False),
    ],
)
def test_postgresql_errors_say_whether_the_store_is_unwritable_and_whether_to_wait(
    err: psycopg.Error, unwritable: bool, transient: bool
) -> None:
    mapped = backend_error(err)
    assert isinstance(mapped, DatabaseError)
    assert (unwritable_reason(mapped) is not None) == unwritable and is_transient(mapped) == transient
    assert str(mapped) == str(err)
    again = pickle.loads(pickle.dumps(mapped))  # as it crosses to another process
    assert (type(again), str(again), again.unwritable, again.transient) == (
        BackendError, str(err), mapped.unwritable, transient)


def test_a_failed_postgresql_statement_leaves_the_backend_as_a_database_error(pg_url: str) -> None:
    db = PgConnections(PostgresUrl(pg_url))
    try:
        with pytest.raises(DatabaseError) as caught:
            db.one("SELECT 1 / 0")
        assert isinstance(caught.value, BackendError) and not is_transient(caught.value)
        assert isinstance(caught.value.__cause__, psycopg.errors.DivisionByZero)
        with pytest.raises(BackendError), db.transaction() as conn:
            conn.execute("SELECT no_such_column FROM events")
        assert db.one("SELECT 2") == (2,)  # the connection is usable again
    finally:
        db.close()
