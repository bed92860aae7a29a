"""The embedding refresh really runs inside `ups dataflow`: live events reach the embeddings table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scoring.training import train_hgt
from storage.event_store import EventStore
from storage.projections import Status

from graph_fixtures import settings_for, small_store

pytestmark = pytest.mark.slow


def test_live_events_are_embedded_by_the_running_flow(tmp_path: Path) -> None:
    db = tmp_path / "ups.db"
    small_store(db)
    settings = settings_for(db)
    train_hgt(settings, epochs=2)
    with EventStore(db) as store:
        before = store.last_seq()
    env = {**os.environ, "UPS_DEVICE": "cpu", "UPS_REFRESH_TICK_S": "0.1"}
    r = subprocess.run(
        [sys.executable, "-m", "ups", "dataflow", "--db", str(db), "--max-events", "1500", "--rate", "3000", "--quiet"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    with EventStore(db) as store:
        after = store.last_seq()
        live_users = {
            u for (u,) in store.conn.execute(
                "SELECT DISTINCT user_id FROM events WHERE seq > ? AND user_id IS NOT NULL", (before,)
            )
        }
        refreshed = {
            n for (n,) in store.conn.execute(
                "SELECT node_id FROM embeddings WHERE node_type = 'user' AND seq > ?", (before,)
            )
        }
        status = Status(store.conn).get("dataflow")
    assert after > before
    # every user touched by a live event got an embedding computed after that event (drained at EOF)
    assert live_users and live_users <= refreshed
    assert status is not None and status["refresh"] in ("running", "paused") and status["model_version"] == 1
    assert status["device"] == "cpu"
