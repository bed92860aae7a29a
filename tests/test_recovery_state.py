"""Recovery state missing or damaged is never silent: a missing snapshot resumes the mock stream from the
log, a damaged one is one clear error naming the file and the way out (`ups dataflow --reset-recovery`,
which rebuilds from the log without loss), and /health says the flow failed, with the true backlog."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest
from api_support import settings_for as api_settings
from api_support import started

# tests/ is on sys.path (pytest rootdir import)
from flow_processes import reaped, start_flow
from litestar.testing import TestClient
from test_flow_control import _env, _last_seq, _wait
from test_replay import projection_rows, settings_for

from api.app import create_app
from config.settings import Settings
from dataflow.bootstrap import append_dataset
from dataflow.control import FlowControl
from dataflow.flow import mock_source
from dataflow.generator import GeneratorConfig
from dataflow.recovery_dir import RecoveryDamaged, ensure_recovery
from dataflow.runner import replay, run_dataflow
from dataflow.sources import MockSource
from storage.event_store import EventStore
from storage.events import Event
from storage.operations import Status
from storage.projections import Checkpoints


def _scribble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100 : min(len(data), 4096)] = b"A" * (min(len(data), 4096) - 100)
    path.write_bytes(bytes(data))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "pages overwritten": lambda rdir: _scribble(rdir / "part-0.sqlite3"),
    "emptied": lambda rdir: (rdir / "part-0.sqlite3").write_bytes(b""),
    "not a database": lambda rdir: (rdir / "part-0.sqlite3").write_bytes(b"\x00garbage" * 4096),
    "a partition deleted": lambda rdir: (rdir / "part-1.sqlite3").unlink(),
    "description unreadable": lambda rdir: (rdir / "ups-flow.json").write_text("{profile_sh"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_recovery_state_is_one_clear_error_naming_the_file_and_the_fix(tmp_path: Path, damage: str) -> None:
    s = Settings(db=tmp_path / "ups.db", recovery_partitions=2)
    ensure_recovery(s)
    rdir = s.recovery_dir
    DAMAGE[damage](rdir)
    with pytest.raises(RecoveryDamaged) as err:
        ensure_recovery(s)
    msg = str(err.value)
    assert str(rdir) in msg and "ups dataflow --reset-recovery" in msg and "nothing stored is lost" in msg


def test_without_a_snapshot_the_mock_stream_continues_after_its_newest_event_in_the_log(
    tmp_path: Path, small_gen
) -> None:
    db = tmp_path / "ups.db"
    with EventStore(db) as store:
        append_dataset(store, small_gen)
    s = settings_for(db, recovery=False, live_base_ts=None)  # every start is one without a snapshot
    assert run_dataflow(s, max_events=700).events_in == 700
    tag = GeneratorConfig.from_settings(s).tag
    with EventStore(db) as store:
        newest = store.get(f"{tag}-l699")
    assert newest is not None
    # what the next start emits first: the index after the newest in the log, on the same timeline
    source = mock_source(s, FlowControl(rate=s.live_rate))
    first = source.build_part("ingest", MockSource.PART, None).next_batch()[0].items[0]
    assert first.event_id == f"{tag}-l700" and abs(first.ts - (newest.ts + 1 / s.live_rate)) <= 0.001
    assert run_dataflow(s, max_events=1500).events_in == 800
    with EventStore(db) as store:
        ids = [r[0] for r in store.conn.execute(
            "SELECT event_id FROM events WHERE event_id LIKE ? ORDER BY seq", (f"{tag}-l%",))]
    assert ids == [f"{tag}-l{i}" for i in range(1500)]


def _live_times(db: Path, tag: str) -> list[float]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT ts FROM events WHERE event_id LIKE ? ORDER BY seq", (f"{tag}-l%",))]


@pytest.mark.slow
def test_a_deleted_recovery_state_after_a_kill_resumes_from_the_log(tmp_path: Path) -> None:
    db = tmp_path / "ups.db"
    n = 4000
    subprocess.run([sys.executable, "-m", "ups", "generate", "--quiet"], env=_env(db), check=True, capture_output=True)
    base = _last_seq(db)
    with reaped([start_flow(db, "--max-events", str(n))]) as procs:
        _wait(lambda: _last_seq(db) > base + 1500, 120, "the flow to append")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=30)
        shutil.rmtree(tmp_path / "ups.state" / "recovery")
        procs.append(again := start_flow(db, "--max-events", str(n)))
        assert again.wait(timeout=300) == 0, again.stderr.read() if again.stderr else ""
    s = Settings(db=db, users=200, products=20, apps=12)
    tag = GeneratorConfig.from_settings(s).tag
    with sqlite3.connect(db) as conn:
        live = [r[0] for r in conn.execute("SELECT event_id FROM events WHERE event_id LIKE ?", (f"{tag}-l%",))]
    assert sorted(live) == sorted(f"{tag}-l{i}" for i in range(n))  # each once, none missing
    times = _live_times(db, tag)  # the stream went on where the log ended, not from index 0 on a new timeline
    assert max(b - a for a, b in pairwise(times)) < 0.01
    clean = tmp_path / "clean.db"
    replay(Settings(db=db, profile_shards=8), into=clean)
    assert projection_rows(clean) == projection_rows(db)


@pytest.mark.slow
def test_a_damaged_snapshot_fails_clearly_shows_on_health_and_reset_recovery_rebuilds(tmp_path: Path) -> None:
    db = tmp_path / "ups.db"
    subprocess.run([sys.executable, "-m", "ups", "generate", "--quiet"], env=_env(db), check=True, capture_output=True)
    ok = subprocess.run([sys.executable, "-m", "ups", "dataflow", "--quiet", "--max-events", "1000"], env=_env(db),
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    part = tmp_path / "ups.state" / "recovery" / "part-0.sqlite3"
    _scribble(part)
    with EventStore(db) as store:  # events arrive while the flow is down: a backlog
        store.append([Event(f"late-{i}", "app.usage", 1.0e9, "U0000001", "A0001", {"duration": 2.0})
                      for i in range(40)])
        backlog = store.last_seq() - Checkpoints(store.conn).get("profiles")
    assert backlog == 40

    failed = subprocess.run([sys.executable, "-m", "ups", "dataflow", "--quiet"], env=_env(db),
                            capture_output=True, text=True, timeout=180, check=False)
    assert failed.returncode == 2
    assert str(part) in failed.stderr and "--reset-recovery" in failed.stderr
    assert "Traceback" not in failed.stderr and "unwrap" not in failed.stderr
    with EventStore(db) as store:
        assert Status(store.conn).get("dataflow")["state"] == "failed"  # type: ignore[index]
    with TestClient(create_app(api_settings(db))) as client:
        flow = started(client).get("/health").json()["dataflow"]
        with EventStore(db) as store:  # the API's start may have logged its default rules: unfolded too
            backlog = store.last_seq() - Checkpoints(store.conn).get("profiles")
    assert flow["state"] == "failed" and not flow["alive"] and str(part) in flow["error"]
    assert flow["backlog"] == backlog >= 40

    reset = subprocess.run([sys.executable, "-m", "ups", "dataflow", "--quiet", "--reset-recovery",
                            "--max-events", "1500"], env=_env(db), capture_output=True, text=True, timeout=300,
                           check=False)
    assert reset.returncode == 0, reset.stderr
    assert "set aside in" in reset.stderr
    aside = [p for p in (tmp_path / "ups.state").iterdir() if p.name.startswith("recovery.reset-")]
    assert len(aside) == 1 and (aside[0] / "part-0.sqlite3").exists()  # the damaged state is kept, aside
    assert "dataflow stopped: 500 events appended" in reset.stdout  # the stream went on from the log
    with EventStore(db) as store:
        assert Checkpoints(store.conn).get("profiles") == store.last_seq()
        assert Status(store.conn).get("dataflow")["state"] == "stopped"  # type: ignore[index]
    clean = tmp_path / "clean.db"
    replay(Settings(db=db, profile_shards=8), into=clean)
    assert projection_rows(clean) == projection_rows(db)
