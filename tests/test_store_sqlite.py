"""What only the SQLite store does: WAL mode, its schema version in ``user_version``, migrations of files
written by older versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage import Event, EventStore
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




def test_a_bulk_load_into_an_empty_log_ends_with_its_type_index(tmp_path: Path) -> None:
    """The (type, seq) index is left out during a bulk load into an empty log and built at its end; a
    load killed before its end leaves it to the next writable open."""

    def indexes(db: Path) -> set[str]:
        with sqlite3.connect(db) as conn:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}

    db = tmp_path / "a.db"
    with EventStore(db) as store:
        with store.bulk_load():
            assert "events_type_seq" not in indexes(db)
            store.append([Event("e1", "label.observed", 1.0, "U1", None, {"label": "churn", "value": 1})])
        assert "events_type_seq" in indexes(db)
        plan = store.conn.execute("EXPLAIN QUERY PLAN SELECT seq FROM events WHERE type = 'x'").fetchall()
        assert "events_type_seq" in str(plan)
        with store.bulk_load():  # a log with events keeps its index throughout
            assert "events_type_seq" in indexes(db)
    with sqlite3.connect(db) as conn:  # as a load killed midway leaves it
        conn.execute("DROP INDEX events_type_seq")
    with EventStore(db, readonly=True):
        assert "events_type_seq" not in indexes(db)
    with EventStore(db) as store:
        assert "events_type_seq" in indexes(db) and store.count() == 1
