"""Crash safety with a real process: SIGKILL `ups dataflow --max-events N` mid-stream, restart it until
it finishes; every generated event is in the log exactly once and the projections equal a clean replay."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataflow.generator import GeneratorConfig
from dataflow.runner import replay
from storage.event_store import EventStore
from config.settings import Settings

from test_replay import projection_rows  # tests/ is on sys.path (pytest rootdir import)

N = 6000


def _env(db: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        UPS_DB=str(db), UPS_USERS="300", UPS_PRODUCTS="20", UPS_APPS="12", UPS_EVENTS_PER_USER="15", UPS_SEED="7",
        UPS_LIVE_RATE="2500", UPS_BATCH_SIZE="500", UPS_SNAPSHOT_INTERVAL="0.3", UPS_FLUSH_INTERVAL="0.2",
        UPS_PROFILE_SHARDS="16", UPS_STATUS_INTERVAL="0.5",
    )
    return env


def _last_seq(db: Path) -> int:
    if not db.exists():
        return 0
    with EventStore(db) as store:
        return store.last_seq()


def _run_until_done(db: Path, kill_points: tuple[int, ...], base: int) -> list[int]:
    """Start the flow; kill it when the log has grown by each kill point; restart until it exits 0."""
    codes: list[int] = []
    cmd = [sys.executable, "-m", "ups", "dataflow", "--max-events", str(N), "--quiet"]
    for point in (*kill_points, None):
        proc = subprocess.Popen(cmd, env=_env(db), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            if point is None:
                codes.append(proc.wait(timeout=180))
                assert codes[-1] == 0, proc.stderr.read() if proc.stderr else ""
                return codes
            deadline = time.time() + 120
            while _last_seq(db) < base + point and proc.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            codes.append(proc.wait(timeout=30))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return codes


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_points",
    [(0,), (1200,), (3500,), (5900,), (800, 2500)],
    ids=["at-start", "early", "middle", "near-end", "twice"],
)
def test_sigkill_and_restart_loses_nothing(tmp_path: Path, kill_points: tuple[int, ...]) -> None:
    db = tmp_path / "crash.db"
    gen_cmd = [sys.executable, "-m", "ups", "generate", "--quiet"]
    subprocess.run(gen_cmd, env=_env(db), check=True, capture_output=True)
    base = _last_seq(db)
    codes = _run_until_done(db, kill_points, base)
    assert codes[:-1] == [-signal.SIGKILL] * len(kill_points)  # each kill hit a running flow

    s = Settings(db=db, users=300, products=20, apps=12, events_per_user=15, seed=7, profile_shards=16)
    tag = GeneratorConfig.from_settings(s).tag  # live event ids are f"{tag}-l{index}"
    with sqlite3.connect(db) as conn:
        live_ids = [r[0] for r in conn.execute("SELECT event_id FROM events WHERE event_id LIKE ?", (f"{tag}-l%",))]
        count, lo, hi = conn.execute("SELECT count(*), min(seq), max(seq) FROM events").fetchone()
    assert len(live_ids) == N, "some events are missing or were appended twice"
    assert set(live_ids) == {f"{tag}-l{i}" for i in range(N)}
    assert (lo, hi, count) == (1, base + N, base + N)  # no gaps in the log

    live = projection_rows(db)
    assert live["checkpoints"] == [("profiles", base + N)]
    clean = tmp_path / "clean.db"
    replay(s, into=clean)
    assert projection_rows(clean) == live
