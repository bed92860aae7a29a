"""Opening the SQLite database: pragmas, versioned schema, migrations applied on open."""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    import sqlite_utils

BUSY_TIMEOUT_MS = 30_000

#: what a failed statement raises (locked past the busy timeout, disk full ...): callers that retry catch this
DatabaseError = sqlite3.Error


class SchemaTooNew(RuntimeError):
    """The file was written by a newer UPS; we refuse rather than corrupt it."""


#: SQLite result codes (and their messages, for errors raised without a code) that mean the store cannot
#: be written at the moment: a read-only file or directory, a full disk, an unreachable file
_UNWRITABLE_CODES = ("SQLITE_READONLY", "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_IOERR")
_UNWRITABLE_MESSAGES = ("readonly database", "database or disk is full", "unable to open database", "disk i/o error")


def sqlite_unwritable_reason(err: BaseException) -> str | None:
    """What keeps the store from being written, when ``err`` says so; None for any other error.

    Such a failure is the machine's state, not a bug: it passes when the file is made writable or space
    is freed. A connection opened while the file was read-only stays read-only, so callers reopen theirs.
    """
    if not isinstance(err, sqlite3.Error):
        return None
    name = str(getattr(err, "sqlite_errorname", "") or "")
    text = str(err)
    if name.startswith(_UNWRITABLE_CODES) or any(m in text.lower() for m in _UNWRITABLE_MESSAGES):
        return f"{text} ({name})" if name else text
    return None


def _v1(db: sqlite_utils.Database) -> None:
    db.create_table(
        "events",
        {
            "seq": int,
            "event_id": str,
            "type": str,
            "user_id": str,
            "target_id": str,
            "ts": float,
            "payload": str,
            "version": int,
            "recorded_at": float,
        },
        pk="seq",
        not_null={"event_id", "type", "ts", "payload", "version", "recorded_at"},
    )
    db.table("events").create_index(["event_id"], unique=True, index_name="events_event_id")
    db.table("events").create_index(["user_id", "seq"], index_name="events_user_seq")
    db.table("events").create_index(["type", "seq"], index_name="events_type_seq")

    db.create_table(
        "dead_letters",
        {"id": int, "raw": str, "reason": str, "source": str, "received_at": float},
        pk="id",
        not_null={"raw", "reason", "received_at"},
    )
    db.create_table(
        "profiles",
        {"user_id": str, "profile": str, "last_seq": int, "updated_at": float},
        pk="user_id",
        not_null={"profile", "last_seq", "updated_at"},
    )
    db.create_table(
        "embeddings",
        {
            "node_type": str,
            "node_id": str,
            "vector": bytes,
            "dim": int,
            "model_version": int,
            "seq": int,
            "updated_at": float,
        },
        pk=("node_type", "node_id"),
        not_null={"vector", "dim", "model_version", "seq", "updated_at"},
    )
    db.create_table(
        "rules",
        {
            "name": str,
            "description": str,
            "weight": float,
            "condition": str,
            "enabled": int,
            "seq": int,
            "updated_at": float,
        },
        pk="name",
        not_null={"weight", "condition", "enabled", "seq", "updated_at"},
    )
    db.create_table(
        "models",
        {
            "version": int,
            "kind": str,
            "created_at": float,
            "config": str,
            "metrics": str,
            "weights": bytes,
            "seq": int,
        },
        pk="version",
        not_null={"kind", "created_at", "config", "metrics"},
    )
    db.table("models").create_index(["kind", "version"], index_name="models_kind_version")
    db.create_table(
        "checkpoints",
        {"projection": str, "seq": int, "updated_at": float},
        pk="projection",
        not_null={"seq", "updated_at"},
    )
    db.create_table(
        "jobs",
        {
            "id": str,
            "kind": str,
            "state": str,
            "params": str,
            "progress": float,
            "message": str,
            "result": str,
            "error": str,
            "created_at": float,
            "started_at": float,
            "finished_at": float,
        },
        pk="id",
        not_null={"kind", "state", "params", "created_at"},
    )
    db.table("jobs").create_index(["kind", "state"], index_name="jobs_kind_state")
    db.create_table(
        "ops_history",
        {
            "id": int,
            "ts": float,
            "source": str,
            "command": str,
            "params": str,
            "state": str,
            "effect": str,
            "applied_at": float,
        },
        pk="id",
        not_null={"ts", "command", "state"},
    )
    db.table("ops_history").create_index(["state", "id"], index_name="ops_history_state")
    db.create_table(
        "status",
        {"component": str, "data": str, "updated_at": float},
        pk="component",
        not_null={"data", "updated_at"},
    )


def _v2(db: sqlite_utils.Database) -> None:
    # The (user_id, seq) index made every append touch a leaf page per event (users are spread over the
    # whole index, so a 10 000-event commit rewrote most of it into the WAL): about 60 % of the append
    # cost at 1M events, growing with the log. No read path uses it (profiles are projections;
    # ``EventStore.events_of_user`` scans). The type index stays: rules, labels and the data config look up
    # rare types by it, and its inserts land on a handful of pages.
    db.execute("DROP INDEX IF EXISTS events_user_seq")


def _v3(db: sqlite_utils.Database) -> None:
    # Model versions are numbered per kind (hgt 1, 2, …; fusion 1, 2, …); one shared counter made an
    # operator read "hgt 1, fusion 2, hgt 3" as three HGT models. Rows keep their numbers: embeddings
    # and events name them, and each stays unique within its kind.
    db.execute(
        "CREATE TABLE models_v3 (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, version INTEGER NOT NULL, "
        "created_at FLOAT NOT NULL, config TEXT NOT NULL, metrics TEXT NOT NULL, weights BLOB, seq INTEGER, "
        "UNIQUE (kind, version))"
    )
    db.execute(
        "INSERT INTO models_v3 (id, kind, version, created_at, config, metrics, weights, seq) "
        "SELECT version, kind, version, created_at, config, metrics, weights, seq FROM models"
    )
    db.execute("DROP TABLE models")
    db.execute("ALTER TABLE models_v3 RENAME TO models")


def _v4(db: sqlite_utils.Database) -> None:
    # A dead letter is kept once: reading the same file again (a restart, a replayed batch) stored every
    # bad line again. The fingerprint hashes the source, the reason (which names the line) and the whole
    # raw text, since only a bounded prefix of the raw text is kept; rows of before have none.
    db.execute("ALTER TABLE dead_letters ADD COLUMN fingerprint TEXT")
    db.execute("CREATE UNIQUE INDEX dead_letters_fingerprint ON dead_letters(fingerprint)")


def _v5(db: sqlite_utils.Database) -> None:
    # Which API process created a job and which worker claimed it ("host:pid"): with several API nodes on
    # one store, a starting node fails only the jobs of a node gone from its own host, and a job handed
    # out twice runs once. Rows of before name neither.
    db.execute("ALTER TABLE jobs ADD COLUMN created_by TEXT")
    db.execute("ALTER TABLE jobs ADD COLUMN claimed_by TEXT")


def _v6(db: sqlite_utils.Database) -> None:
    # The graph's events as integer columns, one block per append (storage.graph_columns): the graph
    # build reads these instead of the log's rows. A store of before starts with none; the log past
    # the blocks is read as before until GraphBlocks.catch_up codes it.
    db.execute(
        "CREATE TABLE graph_blocks (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, token INTEGER NOT NULL, "
        "new_nodes TEXT NOT NULL, kind BLOB NOT NULL, subj BLOB NOT NULL, tgt BLOB NOT NULL, seq BLOB NOT NULL, "
        "ts BLOB NOT NULL)"
    )


#: Migration i brings the schema from version i to i + 1. Append, never edit.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4, _v5, _v6]
#: the log's (type, seq) index and its unique event id index, as the first schema version made them
TYPE_SEQ_INDEX = 'CREATE INDEX IF NOT EXISTS "events_type_seq" ON "events" ("type", "seq")'
EVENT_ID_INDEX = 'CREATE UNIQUE INDEX IF NOT EXISTS "events_event_id" ON "events" ("event_id")'
#: page cache (MiB) while those indexes are built
INDEX_BUILD_CACHE_MB = 256
#: the log's indexes a bulk load leaves out while it runs (EventStore.bulk_load)
DEFERRED_INDEXES = ("events_event_id", "events_type_seq")
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (creating when missing) and migrate the database; WAL, synchronous=NORMAL, busy timeout.

    The connection is in autocommit mode: callers open explicit transactions
    (``BEGIN IMMEDIATE`` for writers) so a batch is all-or-nothing.
    """
    path = Path(path)
    if readonly:
        if not path.exists():
            raise FileNotFoundError(f"no database at {path}")
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None, check_same_thread=False,
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    if not readonly:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        _migrate(conn, path, readonly)
        if not readonly:
            # a bulk load killed before its end left them missing
            restore_log_indexes(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{path} has schema version {version}, newer than this UPS knows ({SCHEMA_VERSION}); "
            "upgrade UPS or point UPS_DB at another file"
        )
    if version == SCHEMA_VERSION:
        return
    if readonly:
        raise SchemaTooNew(f"{path} has schema version {version}; open it read-write once to migrate")
    conn.execute("BEGIN IMMEDIATE")
    try:
        # re-read under the write lock: another process may have migrated meanwhile
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        import sqlite_utils  # here: it imports pandas, which every open of a current database can do without

        db = sqlite_utils.Database(conn)
        for step in MIGRATIONS[version:]:
            step(db)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def restore_log_indexes(conn: sqlite3.Connection) -> int:
    """Build the log's indexes a bulk load leaves out (:data:`DEFERRED_INDEXES`) where they are missing
    (one read, and no write lock, when they are there); how many events were dropped. An event id
    that went in twice while its unique index was out keeps its first event, as ``ON CONFLICT DO
    NOTHING`` would have; the graph blocks from its first repeat on are dropped with it (the next
    catch-up codes the log again from there)."""
    marks = ",".join("?" * len(DEFERRED_INDEXES))
    present = conn.execute(f"SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN ({marks})",
                           DEFERRED_INDEXES).fetchone()[0]
    if present == len(DEFERRED_INDEXES):
        return 0
    dropped = 0
    # each build is a sort: SQLite's sorter on two threads and a page cache of INDEX_BUILD_CACHE_MB
    # (3M events: a third less CPU, half the wall time or better, than with the defaults)
    before = [conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("cache_size", "threads")]
    conn.execute(f"PRAGMA cache_size=-{INDEX_BUILD_CACHE_MB * 1024}")
    conn.execute("PRAGMA threads=2")
    try:
        with transaction(conn):
            try:
                conn.execute(EVENT_ID_INDEX)
            except sqlite3.IntegrityError:  # an id repeated: the failed statement alone is undone
                dropped = _drop_repeated_ids(conn)
                conn.execute(EVENT_ID_INDEX)
            conn.execute(TYPE_SEQ_INDEX)
    finally:
        conn.execute(f"PRAGMA cache_size={int(before[0])}")
        conn.execute(f"PRAGMA threads={int(before[1])}")
    return dropped


def _drop_repeated_ids(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TEMP TABLE repeated AS SELECT seq FROM (SELECT seq, row_number() OVER (PARTITION BY event_id "
        "ORDER BY seq) AS k FROM events) WHERE k > 1"
    )
    first, n = conn.execute("SELECT min(seq), count(*) FROM repeated").fetchone()
    conn.execute("DELETE FROM events WHERE seq IN (SELECT seq FROM repeated)")
    conn.execute("DELETE FROM graph_blocks WHERE last_seq >= ?", (first,))
    conn.execute("DROP TABLE repeated")
    return int(n)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction (``BEGIN IMMEDIATE``) on an autocommit connection; nested calls join the outer one."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def json_text(obj: Any) -> str:
    """Canonical compact JSON (sorted keys, UTF-8 kept) for the store's JSON columns."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
