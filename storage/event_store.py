"""The append-only event log: the source of truth every projection is rebuilt from."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from pydantic_core import from_json, to_json

from .columns import EventBatch, NewEvents, scan_columns
from .db import DEFERRED_INDEXES, connect, restore_log_indexes, transaction
from .events import Event, StoredEvent
from .embeddings import Embeddings
from .graph_blocks import GraphBlocks
from .graph_columns import NodeCodes
from .operations import Jobs, OpsHistory, Status
from .projections import Checkpoints, Models, Profiles, Rules

_INSERT = (
    "INSERT INTO events(event_id, type, user_id, target_id, ts, payload, version, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(event_id) DO NOTHING"
)
#: the insert of a bulk load while the id index is out (``ON CONFLICT(event_id)`` names no index then):
#: skips an id already there when another writer built the index meanwhile, and the index's build at
#: the load's end keeps an id's first event otherwise
_BULK_INSERT = _INSERT.replace("INSERT INTO", "INSERT OR IGNORE INTO").replace(" ON CONFLICT(event_id) DO NOTHING", "")
_COLUMNS = "seq, event_id, type, user_id, target_id, ts, payload, version, recorded_at"


#: characters of a refused item's raw text a dead letter keeps (a 5 MB line is not kept whole)
DEAD_LETTER_CHARS = 4096


@dataclass(slots=True)
class AppendResult:
    """What an append did: the (seq, event_id) of each new event, how many were already there, and
    those among them whose id is in the log with other content (each with the reason): not appended,
    and never to be dropped silently."""

    new: list[tuple[int, str]] = field(default_factory=list)
    duplicates: int = 0
    conflicts: list[tuple[Event, str]] = field(default_factory=list)

    @property
    def new_ids(self) -> set[str]:
        return {eid for _, eid in self.new}

    @property
    def last_seq(self) -> int | None:
        return self.new[-1][0] if self.new else None


#: value types whose JSON text pydantic-core writes exactly as json.dumps does
_SCALARS = frozenset({str, int, float, bool, type(None)})


def payload_text(payload: dict[str, Any]) -> str:
    # Flat payloads (all the high-volume types) are written by pydantic-core: the same compact UTF-8
    # JSON as json.dumps(ensure_ascii=False, separators=(",", ":")), NaN/Infinity included, about ten
    # times faster; only tiny floats' exponents read "1e-7" for "1e-07" (the same value). Anything
    # else goes through json.dumps, so what it refuses (sets, numpy scalars) is refused as before.
    if not payload:
        return "{}"
    for v in payload.values():
        if type(v) not in _SCALARS:
            return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return to_json(payload).decode()


def _row(e: Event, now: float) -> tuple[Any, ...]:
    return (e.event_id, e.type, e.user_id, e.target_id, e.ts, payload_text(e.payload), e.version, now)


def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """The rows through the idempotent insert; where the id index it names is out (a bulk load under
    way on another connection, or this one's), the indexes are built first."""
    try:
        conn.executemany(_INSERT, rows)
    except sqlite3.OperationalError as err:
        if "ON CONFLICT clause does not match" not in str(err):
            raise
        restore_log_indexes(conn)
        conn.executemany(_INSERT, rows)


def _stored(r: tuple[Any, ...]) -> StoredEvent:
    return StoredEvent(
        event_id=r[1],
        type=r[2],
        ts=r[5],
        user_id=r[3],
        target_id=r[4],
        payload=json.loads(r[6]),
        version=r[7],
        seq=r[0],
        recorded_at=r[8],
    )


class EventStore:
    """One SQLite connection to the log and its projections (WAL: many readers, one writer).

    The SQLite implementation of :class:`storage.interface.Store`: the log's methods here, each
    projection's behind its repository attribute (``store.profiles``, ``store.jobs`` ...), all on the
    same connection, so they join the store's :meth:`transaction`.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.location = self.path
        self._readonly = readonly
        self._conn: sqlite3.Connection = connect(self.path, readonly=readonly)
        self._stale = False
        self._codes = NodeCodes()
        #: inside :meth:`bulk_load` with the log's indexes out
        self._bulk = False

    @property
    def conn(self) -> sqlite3.Connection:
        if self._stale and not self._conn.in_transaction:
            self._stale = False
            # the old connection is closed when the last thread using it lets it go
            self._conn = connect(self.path, readonly=self._readonly)
        return self._conn

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def reopen(self) -> None:
        """Use a new connection from the next operation on: one opened while the file was read-only
        stays read-only after the file becomes writable."""
        self._stale = True

    # the repositories of the projections, on the current connection (reopen() may replace it)
    @property
    def checkpoints(self) -> Checkpoints:
        return Checkpoints(self.conn)

    @property
    def profiles(self) -> Profiles:
        return Profiles(self.conn)

    @property
    def embeddings(self) -> Embeddings:
        return Embeddings(self.conn)

    @property
    def rules(self) -> Rules:
        return Rules(self.conn)

    @property
    def graph_columns(self) -> GraphBlocks:
        return GraphBlocks(self.conn, self._codes)

    @property
    def models(self) -> Models:
        return Models(self.conn)

    @property
    def jobs(self) -> Jobs:
        return Jobs(self.conn)

    @property
    def ops(self) -> OpsHistory:
        return OpsHistory(self.conn)

    @property
    def status(self) -> Status:
        return Status(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "EventStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``); nested calls join the outer one."""
        with transaction(self.conn) as conn:
            yield conn

    def lock_appends(self) -> None:
        """Inside :meth:`transaction`: nothing else appends until it ends. Already so in SQLite, whose
        write transaction (``BEGIN IMMEDIATE``) holds the one write lock."""
        if not self.conn.in_transaction:
            raise RuntimeError("lock_appends() belongs inside store.transaction()")

    def tune_writer(self, cache_mb: int, autocheckpoint_pages: int) -> None:
        """A writer's connection: a page cache of ``cache_mb`` and WAL checkpoints by itself only after
        ``autocheckpoint_pages`` (a supervisor thread checkpoints long before, see :meth:`checkpoint_wal`)."""
        self.conn.execute(f"PRAGMA cache_size=-{int(cache_mb) * 1024}")
        self.conn.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint_pages)}")

    def checkpoint_wal(self) -> None:
        """Copy what no reader needs from the WAL into the database (PASSIVE: never blocks writers)."""
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    # ------------------------------------------------------------------ writing

    def append(self, events: Iterable[Event]) -> AppendResult:
        """Append a batch in one transaction. Idempotent on ``event_id``: re-appending is a no-op."""
        now = time.time()
        events_list = events if isinstance(events, list) else list(events)
        rows = [_row(e, now) for e in events_list]
        if not rows:
            return AppendResult()
        with self.transaction() as conn:
            before, top = self.graph_columns.log_end_and_newest()
            changes = conn.total_changes
            _insert(conn, rows)
            if conn.total_changes - changes == len(rows):
                # All new (the common case): seq is the rowid, so under our write lock the rows took
                # before+1, before+2, ... in the order given; no need to read them back.
                new = [(before + 1 + i, r[0]) for i, r in enumerate(rows)]
                self._codes.record_rows(self.graph_columns, before, new, rows, top)
            else:
                # We hold the write lock, so every row past `before` is one of ours.
                new = conn.execute(
                    "SELECT seq, event_id FROM events WHERE seq > ? ORDER BY seq", (before,)
                ).fetchall()
                self._codes.record_rows(self.graph_columns, before, new, rows, top)
                conflicts = self._conflicts(events_list, rows, {eid for _, eid in new})
                return AppendResult(new=new, duplicates=len(rows) - len(new), conflicts=conflicts)
        return AppendResult(new=new, duplicates=len(rows) - len(new))

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Around a bulk load into an empty log: its indexes (``(type, seq)`` and the unique event id)
        are left out while the rows go in and built once at the end, one sort each instead of an index
        insert per event (4M events: 12.4 CPU-s inserted with the id index, 9.0 without it and built after). The
        ids are checked when their index is built: one given twice keeps its first event, as an append
        would. A log with events keeps its indexes (a rebuild would cost more than the load saves); a
        process killed mid-load leaves them to the next writable open, and another writer meanwhile
        builds them before its append (``storage.db.restore_log_indexes``)."""
        if self.last_seq() > 0:
            yield
            return
        with self.transaction() as conn:
            for name in DEFERRED_INDEXES:
                conn.execute(f"DROP INDEX IF EXISTS {name}")
        self._bulk = True
        try:
            yield
        finally:
            self._bulk = False
            restore_log_indexes(self.conn)

    def append_columns(self, batch: NewEvents) -> tuple[int, int]:
        """Append events given as columns in one transaction: (appended, already there). Idempotent on
        ``event_id`` like :meth:`append`; for bulk writers of known content (the mock dataset), so the
        ids already there are counted, not compared."""
        if not len(batch):
            return 0, 0
        with self.transaction() as conn:
            before = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
            changes = conn.total_changes
            conn.executemany(_BULK_INSERT if self._bulk else _INSERT, batch.rows(time.time()))
            appended = conn.total_changes - changes
            if appended == len(batch):
                seqs = np.arange(before + 1, before + 1 + appended, dtype=np.int64)
                self._codes.record(self.graph_columns, before, before + appended, seqs, batch.type, batch.user,
                                   batch.target, batch.ts)
            elif appended:
                new = conn.execute("SELECT seq, event_id FROM events WHERE seq > ? ORDER BY seq", (before,)).fetchall()
                self._codes.record_rows(self.graph_columns, before, new,
                                        list(zip(batch.event_id, batch.type, batch.user, batch.target, batch.ts)))
        return appended, len(batch) - appended

    def _conflicts(self, events: list[Event], rows: list[tuple[Any, ...]], new_ids: set[str]) -> list[tuple[Event, str]]:
        """The duplicates (rows not appended) whose stored event differs from them (recorded_at aside)."""
        out: list[tuple[Event, str]] = []
        first_new = dict.fromkeys(new_ids, True)
        for event, row in zip(events, rows):
            eid = row[0]
            if first_new.pop(eid, False):
                continue  # this row is the one appended
            stored = self.conn.execute(
                "SELECT type, user_id, target_id, ts, payload, version FROM events WHERE event_id = ?", (eid,)
            ).fetchone()
            if stored is not None and tuple(stored) != row[1:7]:
                out.append((event, f"event_id: {eid!r} is already in the log with other content"))
        return out

    def add_dead_letter(self, raw: Any, reason: str, source: str = "") -> None:
        """Keep an event that failed validation, verbatim, with the reason."""
        self.add_dead_letters([(raw, reason)], source)

    def add_dead_letters(self, items: Sequence[tuple[Any, str]], source: str = "") -> None:
        """Keep refused items with their reasons: each once (the same item refused again for the same
        reason from the same source is not added again), its raw text cut to DEAD_LETTER_CHARS."""
        now = time.time()
        rows = []
        for raw, reason in items:
            text = _raw_text(raw)
            rows.append((_bounded(text), reason, source, now, _fingerprint(source, reason, text)))
        if rows:
            with self.transaction() as conn:
                conn.executemany(
                    "INSERT INTO dead_letters(raw, reason, source, received_at, fingerprint) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(fingerprint) DO NOTHING",
                    rows,
                )

    # ------------------------------------------------------------------ reading

    def read(
        self,
        from_seq: int = 1,
        to_seq: int | None = None,
        limit: int | None = None,
        *,
        types: Sequence[str] | None = None,
        page: int = 10_000,
    ) -> Iterator[StoredEvent]:
        """Stream events with ``from_seq <= seq <= to_seq`` in seq order, a page at a time."""
        remaining = limit
        cursor = from_seq
        where_types = ""
        type_args: tuple[Any, ...] = ()
        if types:
            where_types = f" AND type IN ({','.join('?' * len(types))})"
            type_args = tuple(types)
        upper = to_seq if to_seq is not None else 2**62
        while remaining is None or remaining > 0:
            n = page if remaining is None else min(page, remaining)
            rows = self.conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE seq >= ? AND seq <= ?{where_types} ORDER BY seq LIMIT ?",
                (cursor, upper, *type_args, n),
            ).fetchall()
            if not rows:
                return
            for r in rows:
                yield _stored(r)
            cursor = rows[-1][0] + 1
            if remaining is not None:
                remaining -= len(rows)
            if len(rows) < n:
                return

    def read_columns(
        self,
        from_seq: int,
        to_seq: int | None,
        types: Sequence[str],
        payload_types: Sequence[str] = (),
        chunk: int = 500_000,
    ) -> Iterator[EventBatch]:
        """Events of ``types`` with ``from_seq <= seq <= to_seq`` as numpy columns, one batch per
        ``chunk`` seqs of the log; payloads (JSON text) for ``payload_types`` only, None for the others."""
        upper = self.last_seq() if to_seq is None else min(to_seq, self.last_seq())
        return scan_columns(self.conn, from_seq, upper, types, payload_types, chunk)

    def events_of_user(self, user_id: str, limit: int | None = None) -> list[StoredEvent]:
        """A user's events in seq order. A scan of the log (no per-user index: see ``storage.db._v2``);
        for diagnostics and tests, not for a request path."""
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE user_id = ? ORDER BY seq LIMIT ?",
            (user_id, -1 if limit is None else limit),
        ).fetchall()
        return [_stored(r) for r in rows]

    def get(self, event_id: str) -> StoredEvent | None:
        r = self.conn.execute(f"SELECT {_COLUMNS} FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return _stored(r) if r else None

    def read_batch(self, first: int, last: int, limit: int) -> tuple[list[Event], list[int]]:
        """Events ``first..last`` (at most ``limit``) and their seqs, for folding.

        Leaner than :meth:`read`: only the columns an :class:`Event` has, and payloads parsed by
        pydantic-core's JSON parser (several times faster than ``json.loads`` on these small objects;
        same values)."""
        rows = self.conn.execute(
            "SELECT seq, event_id, type, user_id, target_id, ts, payload, version FROM events "
            "WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
            (first, last, limit),
        ).fetchall()
        events = [
            Event(eid, etype, ts, uid, target, from_json(payload) if payload != "{}" else {}, version)
            for _, eid, etype, uid, target, ts, payload, version in rows
        ]
        return events, [r[0] for r in rows]

    def first_of_type(self, event_type: str) -> StoredEvent | None:
        r = self.conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE type = ? ORDER BY seq LIMIT 1", (event_type,)
        ).fetchone()
        return _stored(r) if r else None

    def last_of_type(self, event_type: str) -> StoredEvent | None:
        r = self.conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE type = ? ORDER BY seq DESC LIMIT 1", (event_type,)
        ).fetchone()
        return _stored(r) if r else None

    def last_seq_of_types(self, types: Sequence[str]) -> int:
        """Seq of the newest event of one of ``types`` (0: none)."""
        q = f"SELECT coalesce(max(seq), 0) FROM events WHERE type IN ({','.join('?' * len(types))})"
        return int(self.conn.execute(q, tuple(types)).fetchone()[0])

    def event_id_prefixes(self, event_type: str, length: int) -> list[str]:
        """The distinct first ``length`` characters of the ids of ``event_type`` events, sorted."""
        rows = self.conn.execute(
            "SELECT DISTINCT substr(event_id, 1, ?) FROM events WHERE type = ? ORDER BY 1", (length, event_type)
        ).fetchall()
        return [p for (p,) in rows]

    def distinct_targets(self, types: Sequence[str]) -> int:
        """How many distinct ``target_id`` the events of ``types`` name."""
        q = f"SELECT count(DISTINCT target_id) FROM events WHERE type IN ({','.join('?' * len(types))})"
        return int(self.conn.execute(q, tuple(types)).fetchone()[0])

    def distinct_users(self, user_types: Sequence[str], target_types: Sequence[str]) -> int:
        """How many distinct users appear as ``user_id`` of ``user_types`` or as ``target_id`` of
        ``target_types`` (calls name a user as their target)."""
        q = (
            "SELECT count(*) FROM (SELECT user_id FROM events WHERE user_id IS NOT NULL AND type IN "
            f"({','.join('?' * len(user_types))}) UNION SELECT target_id FROM events WHERE type IN "
            f"({','.join('?' * len(target_types))}))"
        )
        return int(self.conn.execute(q, (*user_types, *target_types)).fetchone()[0])

    def first_recorded_after(self, seq: int) -> float | None:
        """When the first event after ``seq`` was recorded (None: there is none)."""
        r = self.conn.execute("SELECT recorded_at FROM events WHERE seq > ? ORDER BY seq LIMIT 1", (seq,)).fetchone()
        return float(r[0]) if r else None

    def last_event(self) -> tuple[int, float | None]:
        """(seq, event time) of the newest event; (0, None) for an empty log."""
        r = self.conn.execute("SELECT seq, ts FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(r[0]), float(r[1])) if r else (0, None)

    def newest_with_id_prefix(self, prefix: str) -> tuple[str, float] | None:
        """(event id, event time) of the newest event (by seq) whose id starts with ``prefix``, if any."""
        if not prefix:
            raise ValueError("an id prefix is needed")
        hi = prefix[:-1] + chr(ord(prefix[-1]) + 1)  # ids starting with prefix are in [prefix, hi)
        if self.conn.execute(
            "SELECT 1 FROM events WHERE event_id >= ? AND event_id < ? LIMIT 1", (prefix, hi)
        ).fetchone() is None:
            return None
        # newest first from the end of the log (the unary + keeps SQLite off the id index, whose range
        # would have to be read whole and sorted): a stream's newest events are near the end
        r = self.conn.execute(
            "SELECT event_id, ts FROM events WHERE +event_id >= ? AND +event_id < ? ORDER BY seq DESC LIMIT 1",
            (prefix, hi),
        ).fetchone()
        return (str(r[0]), float(r[1])) if r else None

    def last_seq(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

    def export_rows(self, chunk: int = 200_000) -> Iterator[list[tuple[Any, ...]]]:
        """Every event as (seq, event_id, type, user_id, target_id, ts, duration, amount, payload), in seq
        order, ``chunk`` rows at a time; duration and amount read from the payload (None where absent)."""
        cur = self.conn.execute(
            "SELECT seq, event_id, type, user_id, target_id, ts, json_extract(payload, '$.duration'), "
            "json_extract(payload, '$.amount'), payload FROM events ORDER BY seq"
        )
        while batch := cur.fetchmany(chunk):
            yield batch

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def counts_by_type(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT type, count(*) FROM events GROUP BY type ORDER BY type"))

    def dead_letter_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT id, raw, reason, source, received_at FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [dict(zip(("id", "raw", "reason", "source", "received_at"), r)) for r in rows]


def _bounded(text: str) -> str:
    if len(text) <= DEAD_LETTER_CHARS:
        return text
    return f"{text[:DEAD_LETTER_CHARS]}… [cut: {len(text)} characters in all]"


def _fingerprint(source: str, reason: str, text: str) -> str:
    h = hashlib.sha256()
    for part in (source, reason, text):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def _raw_text(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="backslashreplace")
    if isinstance(raw, str):
        return raw
    if isinstance(raw, Event):
        return raw.to_json()
    try:
        return json.dumps(raw, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(raw)
