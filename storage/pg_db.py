"""Connections to a PostgreSQL store: a psycopg connection pool, one connection per thread at a time.

A store object may be used from several threads (the API's handlers, a flow's sinks): each thread borrows
its own connection from the pool for a statement, or for the whole of a :meth:`PgConnections.transaction`,
so one thread's transaction never takes in another thread's statements. A connection is never held across
a ``yield``: generators read page by page, each page a short borrow. A connection the server dropped (a
restart) is discarded by the pool when it comes back broken, so the next statement gets a new one.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

import psycopg
from psycopg import pq, sql
from psycopg_pool import ConnectionPool, PoolTimeout

from config.db_location import PostgresUrl

from .errors import BackendError, StoreUnreachable

#: seconds to wait for a first connection when a store is opened
CONNECT_TIMEOUT_S = 10.0


def backend_error(err: psycopg.Error) -> BackendError:
    """The driver's error as the store's callers see it (``storage.errors``): a connection that failed
    or broke, or a server that refuses writes (read-only, disk full), makes the store unwritable for
    now; a failed or broken connection is waited out."""
    unwritable = None
    if isinstance(err, (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction,
                        psycopg.errors.DiskFull, psycopg.errors.AdminShutdown)):
        unwritable = PostgresUrl.redact_text(str(err).strip() or type(err).__name__)
    return BackendError(str(err), unwritable, isinstance(err, psycopg.OperationalError))


@contextmanager
def driver_errors_mapped() -> Iterator[None]:
    """The driver's errors raised inside, as :func:`backend_error` maps them."""
    try:
        yield
    except psycopg.Error as err:
        raise backend_error(err) from err


class PgConnections:
    """A pool of autocommit connections to one database, borrowed per thread."""

    def __init__(self, url: PostgresUrl, *, readonly: bool = False, max_size: int = 8) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT_S)}
        if readonly:
            kwargs["options"] = "-c default_transaction_read_only=on"
        self._local = threading.local()
        try:  # one direct connection first: a wrong address or database fails at once, with its reason
            psycopg.connect(url.secret, **kwargs).close()
        except psycopg.OperationalError as err:
            raise StoreUnreachable(f"PostgreSQL at {url} is unreachable: {url.redact_text(str(err).strip())}") from None
        self.pool = ConnectionPool(
            url.secret, min_size=1, max_size=max_size, kwargs=kwargs, open=False, num_workers=1,
            timeout=CONNECT_TIMEOUT_S, name=str(url),
        )
        try:
            self.pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout:
            self.pool.close(timeout=0)
            raise StoreUnreachable(f"PostgreSQL at {url} is unreachable: {_first_error(url)}") from None

    @contextmanager
    def conn(self) -> Iterator[psycopg.Connection[Any]]:
        """This thread's connection: the one it already holds (inside a transaction), or one from the pool."""
        held: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if held is not None:
            yield held
            return
        broken = False
        try:
            with self.pool.connection() as conn:
                self._local.conn = conn
                try:
                    yield conn
                except psycopg.OperationalError:
                    broken = True
                    raise
                finally:
                    self._local.conn = None
        except PoolTimeout:
            raise StoreUnreachable(f"PostgreSQL at {self.url} is unreachable: {_first_error(self.url)}") from None
        except psycopg.Error as err:  # every statement runs in here: its errors leave the backend mapped
            raise backend_error(err) from err
        finally:
            if broken:  # the server went away: the idle connections are broken too, replace them now
                self.pool.check()

    @property
    def in_transaction(self) -> bool:
        held: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        return held is not None and held.info.transaction_status != pq.TransactionStatus.IDLE

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A transaction on this thread's connection; nested calls join the outer one."""
        with self.conn() as conn:
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                yield conn
                return
            with conn.transaction():
                yield conn

    def all(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.conn() as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    def one(self, query: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self.conn() as conn:
            return conn.execute(query, params).fetchone()  # type: ignore[arg-type]

    def run(self, query: str, params: Sequence[Any] = ()) -> int:
        """Execute a statement; how many rows it changed."""
        with self.conn() as conn:
            return conn.execute(query, params).rowcount  # type: ignore[arg-type]

    def copy_then(self, temp: str, columns: str, rows: Iterable[Sequence[Any]], statement: str,
                  params: Sequence[Any] = ()) -> int:
        """``rows`` COPYed into a temporary table ``temp`` (emptied first), then ``statement`` (an
        INSERT ... SELECT from it) in the same transaction; how many rows the statement changed. Five
        times faster than one INSERT over ``unnest`` of arrays (measured, 20 000 profile documents),
        which PostgreSQL reads slowly."""
        with self.transaction() as conn:
            conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {temp} ({columns}) ON COMMIT DELETE ROWS")
            # inside a caller's transaction an earlier call's rows are still there (nothing committed
            # yet): they would go in again, under this call's parameters
            conn.execute(f"TRUNCATE {temp}")
            with conn.cursor() as cur:
                with cur.copy(f"COPY {temp} FROM STDIN") as copy:
                    for r in rows:
                        copy.write_row(r)
                cur.execute(statement, params)  # type: ignore[arg-type]
                return cur.rowcount

    def many(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn() as conn, conn.cursor() as cur:
            cur.executemany(query, rows)  # type: ignore[arg-type]

    def close(self) -> None:
        self.pool.close()


def _first_error(url: PostgresUrl) -> str:
    """Why a connection fails now (the pool only says it timed out): one direct attempt's error."""
    try:
        psycopg.connect(url.secret, connect_timeout=3).close()
    except psycopg.Error as err:
        return url.redact_text(str(err).strip())
    return "connections time out"


def create_database(admin_url: str, name: str) -> str:
    """Create the empty database ``name`` on the server of ``admin_url``; the new database's URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def create_next_database(url: PostgresUrl, name: str) -> PostgresUrl | None:
    """Create the empty database ``name`` on ``url``'s server (through a connection to ``url``): its URL,
    or None when a database of that name is there already. Refused with a clear error when the role of
    ``url`` may not create databases."""
    try:
        with psycopg.connect(url.secret, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S)) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.DuplicateDatabase:
        return None
    except psycopg.errors.InsufficientPrivilege:
        raise PermissionError(
            f"the role of {url} may not create databases (it needs CREATEDB): grant it (ALTER ROLE ... CREATEDB), "
            f"or create the database {name!r} yourself, generate into it (ups generate --db URL) and point UPS_DB at it"
        ) from None
    except psycopg.OperationalError as err:
        raise StoreUnreachable(f"PostgreSQL at {url} is unreachable: {url.redact_text(str(err).strip())}") from None
    except psycopg.Error as err:
        raise backend_error(err) from err
    return url.with_database(name)
