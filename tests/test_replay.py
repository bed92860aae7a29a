"""Replay equals live: the live flow's projections equal those rebuilt from its log."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dataflow.bootstrap import append_dataset
from dataflow.generator import MockGenerator
from dataflow.runner import replay, run_dataflow
from storage.event_store import EventStore
from storage.events import Event
from ups.cli import main
from config.settings import Settings


def settings_for(db: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        db=db, users=300, products=20, apps=12, events_per_user=15, seed=7, live_rate=1_000_000,
        snapshot_interval=0.5, flush_interval=0.2, profile_shards=16, live_base_ts=1_767_225_600.0,
        status_interval=0.2, command_poll_interval=0.1,
    )
    base.update(kw)
    return Settings(**base)


def projection_rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection row the flow writes (profiles and their checkpoint), minus write times."""
    with sqlite3.connect(db) as conn:
        return {
            "profiles": conn.execute("SELECT user_id, profile, last_seq FROM profiles ORDER BY user_id").fetchall(),
            "checkpoints": conn.execute("SELECT projection, seq FROM checkpoints ORDER BY projection").fetchall(),
            "rules": conn.execute(
                "SELECT name, description, weight, condition, enabled, seq FROM rules ORDER BY name"
            ).fetchall(),
        }


def _rule(eid: str, etype: str, name: str, **payload: Any) -> Event:
    body = {"name": name, **payload} if etype != "rule.deleted" else {"name": name}
    return Event(eid, etype, 1.0, None, None, body)


@pytest.fixture
def live_db(tmp_path: Path, small_gen: MockGenerator) -> Path:
    """A database with a generated history, then 4 000 live events through the real flow."""
    db = tmp_path / "live.db"
    with EventStore(db) as store:
        append_dataset(store, small_gen)
        store.append([
            _rule("r1", "rule.created", "low_fee", weight=0.4, condition="monthly_fee < 50"),
            _rule("r2", "rule.created", "heavy", weight=0.2, condition="total_events > 30", description="活跃"),
            _rule("r3", "rule.updated", "low_fee", weight=0.6, condition="monthly_fee < 40", enabled=False),
            _rule("r4", "rule.deleted", "heavy"),
            _rule("r5", "rule.created", "heavy", weight=0.1, condition="total_events > 50"),
            _rule("r6", "rule.created", "gone", weight=0.1, condition="tenure_months < 3"),
            _rule("r7", "rule.deleted", "gone"),
        ])
    summary = run_dataflow(settings_for(db), max_events=4000)
    assert summary.events_in == 4000 and summary.profiles_seq == summary.last_seq
    return db


def test_replay_into_a_fresh_database_equals_live(live_db: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "replayed.db"
    summary = replay(settings_for(live_db), into=fresh)
    assert summary.events == summary.last and summary.profiles > 300  # live registrations add users
    live, rebuilt = projection_rows(live_db), projection_rows(fresh)
    assert len(live["profiles"]) == summary.profiles
    assert [(r[0], r[2], r[3], r[4]) for r in live["rules"]] == [
        ("heavy", 0.1, "total_events > 50", 1),
        ("low_fee", 0.6, "monthly_fee < 40", 0),
    ]
    assert rebuilt == live


def test_replay_in_parts_and_with_two_workers_equals_live(live_db: Path, tmp_path: Path) -> None:
    live = projection_rows(live_db)
    last = live["checkpoints"][0][1]
    parts = tmp_path / "parts.db"
    s = settings_for(live_db)
    replay(s, to_seq=last // 3, into=parts)
    replay(s, from_seq=last // 3 + 1, to_seq=2 * last // 3, into=parts)
    replay(s, from_seq=2 * last // 3 + 1, into=parts)
    assert projection_rows(parts) == live
    two = tmp_path / "two.db"
    replay(s, into=two, workers=2)  # two seq ranges folded in parallel, interleaved per user
    assert projection_rows(two) == live


def graph_columns(db: Path) -> tuple[Any, ...]:
    with EventStore(db, readonly=True) as store:
        d = store.graph_columns.read()
    return d.upto, d.node_ids, d.kind.tolist(), d.subj.tolist(), d.tgt.tolist(), d.seq.tolist(), d.ts.tolist()


@pytest.mark.parametrize("workers", [1, 2])  # one reader codes the graph columns as it reads; two: after
def test_replay_in_place_rebuilds_the_same_rows(live_db: Path, workers: int) -> None:
    before, columns = projection_rows(live_db), graph_columns(live_db)
    assert columns[0] == before["checkpoints"][0][1]  # the live flow's appends wrote them all
    with sqlite3.connect(live_db) as conn:
        conn.execute("UPDATE profiles SET profile = '{}'")  # damage the projections
        conn.execute("DELETE FROM rules WHERE name = 'heavy'")
        conn.execute("INSERT INTO rules VALUES ('stray', '', 1.0, 'True', 1, 0, 0.0)")
        conn.execute("DELETE FROM graph_blocks WHERE first_seq > 100")
    replay(settings_for(live_db), workers=workers)
    assert projection_rows(live_db) == before
    assert graph_columns(live_db) == columns


def test_replay_command(live_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_db = tmp_path / "cli.db"
    assert main(["replay", "--db", str(live_db), "--into", str(out_db), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "replayed seq 1.." in out and "events/s" in out
    assert projection_rows(out_db) == projection_rows(live_db)
    # continuing from a seq needs the projection to be exactly there
    assert main(["replay", "--db", str(live_db), "--into", str(out_db), "--from-seq", "5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--from-seq 1 rebuilds them" in err and "error:" in err
    assert main(["replay", "--db", str(tmp_path / "missing.db")]) == 2
    assert "no database" in capsys.readouterr().err
    assert main(["replay", "--db", str(live_db), "--from-seq", "9", "--to-seq", "3"]) == 2
    assert "before --from-seq" in capsys.readouterr().err
