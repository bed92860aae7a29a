"""What only the SQLite store does: WAL mode, its schema version in ``user_version``, migrations of files
written by older versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage import Event, EventStore
from storage.columns import NewEvents
from storage.db import SCHEMA_VERSION
from storage.projections import Models


def ev(i: int, user: str = "U1", etype: str = "call") -> Event:
    return Event(f"e{i}", etype, 1000.0 + i, user, "U2", {"duration": float(i)})


def test_reopen_after_close(db_path: Path) -> None:
    with EventStore(db_path) as s:
        s.append([ev(1), ev(2)])
    with EventStore(db_path) as s:
        assert s.count() == 2 and s.last_seq() == 2
        assert s.append([ev(3)]).new == [(3, "e3")]
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION




def test_a_version_1_database_is_migrated_in_place(db_path: Path) -> None:
    import sqlite_utils

    from storage.db import MIGRATIONS

    raw = sqlite3.connect(db_path)
    MIGRATIONS[0](sqlite_utils.Database(raw))  # a database as version 1 left it, with an event in it
    raw.execute("PRAGMA user_version=1")
    raw.execute(
        "INSERT INTO events(event_id, type, user_id, target_id, ts, payload, version, recorded_at) "
        "VALUES ('e1', 'call', 'A', 'U2', 1001.0, '{\"duration\":1.0}', 1, 1.0)"
    )
    raw.commit()
    raw.close()
    with EventStore(db_path) as s:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {r[1] for r in s.conn.execute("PRAGMA index_list(events)")}
        assert "events_user_seq" not in indexes and {"events_event_id", "events_type_seq"} <= indexes
        assert s.append([ev(1, "A"), ev(2, "A")]).new_ids == {"e2"}  # still idempotent on event_id
        assert [e.event_id for e in s.events_of_user("A")] == ["e1", "e2"]




def test_a_store_with_one_shared_model_counter_keeps_its_versions(db_path: Path) -> None:
    import sqlite_utils

    from storage.db import MIGRATIONS

    raw = sqlite3.connect(db_path)
    for step in MIGRATIONS[:2]:  # the schema before versions were numbered per kind
        step(sqlite_utils.Database(raw))
    raw.execute("PRAGMA user_version=2")
    for version, kind in ((1, "hgt"), (2, "fusion"), (3, "hgt")):
        raw.execute("INSERT INTO models(version, kind, created_at, config, metrics, weights, seq) "
                    "VALUES (?, ?, 1.0, '{}', '{\"auc\": 0.5}', x'00', ?)", (version, kind, version))
    raw.commit()
    raw.close()
    with EventStore(db_path) as s:
        m = Models(s.conn)
        assert m.get("hgt", 3).metrics == {"auc": 0.5} and m.get("fusion", 2).seq == 2 and m.get("hgt", 2) is None
        assert m.latest_version("hgt") == 3 and m.latest_version("fusion") == 2
        assert m.add("fusion", {}, {}, None) == 3 and m.add("hgt", {}, {}, None) == 4
        assert [(x["kind"], x["version"]) for x in m.list()] == [
            ("hgt", 1), ("fusion", 2), ("hgt", 3), ("fusion", 3), ("hgt", 4)]




def _indexes(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def test_a_bulk_load_into_an_empty_log_ends_with_its_indexes(tmp_path: Path) -> None:
    """The (type, seq) and event id indexes are left out during a bulk load into an empty log and built
    at its end; a load killed before its end leaves them to the next writable open."""
    db = tmp_path / "a.db"
    with EventStore(db) as store:
        with store.bulk_load():
            assert not {"events_type_seq", "events_event_id"} & _indexes(db)
            assert store.append_columns(NewEvents.of_events([ev(1), ev(2)])) == (2, 0)
        assert {"events_type_seq", "events_event_id"} <= _indexes(db)
        plan = store.conn.execute("EXPLAIN QUERY PLAN SELECT seq FROM events WHERE type = 'x'").fetchall()
        assert "events_type_seq" in str(plan)
        assert store.append([ev(1), ev(3)]).new == [(3, "e3")]  # the id index is unique again
        with store.bulk_load():  # a log with events keeps its indexes throughout
            assert {"events_type_seq", "events_event_id"} <= _indexes(db)
    with sqlite3.connect(db) as conn:  # as a load killed midway leaves it
        conn.execute("DROP INDEX events_type_seq")
        conn.execute("DROP INDEX events_event_id")
    with EventStore(db, readonly=True) as store:
        assert not {"events_type_seq", "events_event_id"} & _indexes(db)
        assert store.get("e2") is not None  # found without the index
    with EventStore(db) as store:
        assert {"events_type_seq", "events_event_id"} <= _indexes(db) and store.count() == 3


def test_an_id_given_twice_in_a_bulk_load_keeps_its_first_event(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with EventStore(db) as store:
        with store.bulk_load():
            store.append_columns(NewEvents.of_events([ev(1), ev(2)]))
            store.append_columns(NewEvents.of_events([ev(3), Event("e1", "call", 5.0, "U9", "U2", {})]))
        assert [(e.seq, e.event_id, e.user_id) for e in store.read()] == [(1, "e1", "U1"), (2, "e2", "U1"),
                                                                          (3, "e3", "U1")]
        assert store.append([ev(1)]).duplicates == 1
        # the graph blocks of the seqs dropped went with them; the catch-up codes the log again
        assert store.graph_columns.covered() == 2
        assert store.graph_columns.catch_up() == 3
        assert store.graph_columns.read().node_ids[0] == ["U1", "U2"]


def test_a_writer_during_a_bulk_load_appends_idempotently(tmp_path: Path) -> None:
    """Another connection's append while the load has the id index out builds the indexes first, and
    the load goes on past it, skipping an id that writer already appended."""
    db = tmp_path / "a.db"
    with EventStore(db) as loader, EventStore(db) as other:
        with loader.bulk_load():
            loader.append_columns(NewEvents.of_events([ev(1)]))
            assert other.append([ev(1), ev(2)]).new == [(2, "e2")]
            assert "events_event_id" in _indexes(db)
            assert loader.append_columns(NewEvents.of_events([ev(2), ev(3)])) == (1, 1)
        assert [e.event_id for e in loader.read()] == ["e1", "e2", "e3"]
