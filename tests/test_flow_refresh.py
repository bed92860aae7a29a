"""The embedding refresh really runs inside `ups dataflow`: live events reach the embeddings table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scoring.training import train_hgt
from storage.event_store import EventStore
from storage.operations import Status

from graph_fixtures import device_setting, settings_for, small_store

pytestmark = pytest.mark.slow


def _run_and_check(tmp_path: Path, cmd: list[str], env: dict[str, str], device: torch.device) -> None:
    """Run a live flow process on a store with a trained model; every user a live event touched must
    get an embedding computed after that event, and the status must show the refresh branch."""
    db = tmp_path / "ups.db"
    small_store(db)
    settings = settings_for(db, device=device_setting(device))
    train_hgt(settings, epochs=2)
    with EventStore(db) as store:
        before = store.last_seq()
    env = {**os.environ, "UPS_DB": str(db), "UPS_DEVICE": device_setting(device), "UPS_REFRESH_TICK_S": "0.1", **env}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
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
    assert status["device"].split(":")[0] == device.type and status["state"] == "stopped"


def test_live_events_are_embedded_by_the_running_flow(tmp_path: Path, device: torch.device) -> None:
    cmd = [sys.executable, "-m", "ups", "dataflow", "--max-events", "1500", "--rate", "3000", "--quiet"]
    _run_and_check(tmp_path, cmd, {}, device)


def test_the_bytewax_run_entry_point_runs_the_same_flow_with_its_refresh_branch(tmp_path: Path, device: torch.device) -> None:
    cmd = [sys.executable, "-m", "bytewax.run", "dataflow.flow:get_flow(max_events=1500)"]
    _run_and_check(tmp_path, cmd, {"UPS_LIVE_RATE": "3000"}, device)


def test_a_model_registered_while_the_flow_runs_takes_over_every_embedding(tmp_path: Path, device: torch.device) -> None:
    """A new version arriving mid-run is embedded by a full pass on the refresh's background thread
    (the old version serving meanwhile); by the end every node carries the new version, as new as its
    last event."""
    import time

    from graph_fixtures import random_model
    from scoring.graph_loader import build_graph
    from scoring.model_io import register_model

    db = tmp_path / "ups.db"
    small_store(db)
    settings = settings_for(db, device=device_setting(device))
    train_hgt(settings, epochs=1)
    # (20 s of events, and the stop lets the switch finish: the refresher process starts while the flow
    # runs, seconds after it on a loaded machine)
    env = {**os.environ, "UPS_DEVICE": device_setting(device), "UPS_REFRESH_TICK_S": "0.1", "UPS_REFRESH_PASS_CHUNK_EDGES": "1000",
           "UPS_REFRESH_STOP_DRAIN_S": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ups", "dataflow", "--db", str(db), "--max-events", "6000", "--rate", "300", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.time() + 120
        with EventStore(db) as store:
            while time.time() < deadline:  # wait until the flow has refreshed something with version 1
                row = store.conn.execute("SELECT count(*) FROM embeddings WHERE model_version = 1 AND updated_at > ?",
                                         (time.time() - 5,)).fetchone()
                if row[0]:
                    break
                time.sleep(0.2)
            g = build_graph(store, device=device)
            v2 = register_model(store, random_model(g, seed=5), {"note": "mid-run"}, {"seed": 5}, {})
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    with EventStore(db) as store:
        versions = dict(store.conn.execute("SELECT model_version, count(*) FROM embeddings GROUP BY model_version").fetchall())
        stale = store.conn.execute(
            "SELECT count(*) FROM embeddings e WHERE e.node_type = 'user' AND e.seq < "
            "(SELECT max(seq) FROM events v WHERE v.user_id = e.node_id AND v.type IN "
            "('call', 'product.order', 'product.click', 'app.usage', 'app.click', 'user.registered', 'user.updated'))"
        ).fetchone()[0]
        status = Status(store.conn).get("dataflow")
    assert versions.keys() == {v2} and versions[v2] >= 300
    assert stale == 0
    assert status is not None and status["model_version"] == v2


def test_a_stopping_flow_leaves_its_refresh_queue_pending_and_the_next_start_refreshes_it(tmp_path: Path, device: torch.device) -> None:
    """A flow that stops does not work off its whole refresh queue first (at a million users that took as
    long as refreshing them all): with no drain time the queue stays pending, and the next start, resumed
    from the snapshot, refreshes every user the first run's events touched."""
    db = tmp_path / "ups.db"
    small_store(db)
    settings = settings_for(db, device=device_setting(device))
    train_hgt(settings, epochs=1)
    with EventStore(db) as store:
        before = store.last_seq()
    env = {**os.environ, "UPS_DB": str(db), "UPS_DEVICE": device_setting(device)}
    run = [sys.executable, "-m", "ups", "dataflow", "--max-events", "1500", "--rate", "3000", "--quiet"]
    # one tick of one node at the start, none after it: the run's events are pending when it stops
    first = subprocess.run(run, capture_output=True, text=True, timeout=300, env={
        **env, "UPS_REFRESH_TICK_S": "60", "UPS_REFRESH_BUDGET": "1", "UPS_REFRESH_STOP_DRAIN_S": "0"})
    assert first.returncode == 0, first.stderr[-2000:]

    def stale_users() -> tuple[set[str], set[str], dict | None]:
        with EventStore(db) as store:
            live = {u for (u,) in store.conn.execute(
                "SELECT DISTINCT user_id FROM events WHERE seq > ? AND user_id IS NOT NULL", (before,))}
            fresh = {n for (n,) in store.conn.execute(
                "SELECT node_id FROM embeddings WHERE node_type = 'user' AND seq > ?", (before,))}
            status = Status(store.conn).get("dataflow")
        return live, live - fresh, status

    live, stale, status = stale_users()
    assert len(live) > 100 and len(stale) >= len(live) - 1
    assert status is not None and status["refresh_queue"] >= len(stale)
    second = subprocess.run(run, capture_output=True, text=True, timeout=300, env={**env, "UPS_REFRESH_TICK_S": "0.1"})
    assert second.returncode == 0, second.stderr[-2000:]
    live2, stale2, _ = stale_users()
    assert live <= live2 and not stale2
