"""Operator switches outlast the flow: ingestion and the incremental refresh paused before a stop (clean or
kill -9) are still paused when the flow starts again, until resumed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# tests/ is on sys.path (pytest rootdir import)
from flow_processes import reaped, start_flow
from test_flow_control import _env, _last_seq, _request, _resolved, _status_with, _wait

from dataflow.control import ControlLoop, FlowControl
from storage.event_store import EventStore
from storage.operations import OpsHistory


def _started(db: Path) -> FlowControl:
    """The switches a flow starting now on ``db`` holds before it emits anything."""
    control = FlowControl()
    sup = ControlLoop(db, control, status_interval=60, poll_interval=60)
    sup.start()
    switches = FlowControl(ingestion_paused=control.ingestion_paused, refresh_paused=control.refresh_paused)
    sup.finish()
    return switches


@pytest.mark.parametrize(
    ("history", "ingestion_paused", "refresh_paused"),
    [
        ([], False, False),
        ([("ingestion.stop", "applied")], True, False),
        ([("ingestion.stop", "applied"), ("ingestion.start", "applied")], False, False),
        ([("incremental.stop", "applied"), ("ingestion.start", "applied")], False, True),
        ([("ingestion.start", "applied"), ("ingestion.stop", "pending")], True, False),  # asked while no flow ran
        ([("ingestion.stop", "applied"), ("ingestion.start", "expired")], True, False),  # never took effect
        ([("incremental.stop", "applied"), ("shutdown", "applied"), ("explainer.clear", "applied")], False, True),
    ],
)
def test_a_starting_flow_takes_the_newest_switch_of_each_kind(
    db_path: Path, history: list[tuple[str, str]], ingestion_paused: bool, refresh_paused: bool
) -> None:
    with EventStore(db_path) as store, store.transaction() as conn:
        ops = OpsHistory(conn)
        for command, state in history:
            op_id = ops.request(command, source="test")
            if state != "pending":
                ops.resolve(op_id, state, "")
    control = _started(db_path)
    assert (control.ingestion_paused, control.refresh_paused) == (ingestion_paused, refresh_paused)


def _command(db: Path, command: str) -> None:
    op_id = _request(db, command)
    assert _wait(lambda: _resolved(db, op_id), 60, f"{command} to be applied")["state"] == "applied"


@pytest.mark.slow
def test_paused_ingestion_and_refresh_stay_paused_across_restarts(db_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "ups", "generate", "--quiet"], env=_env(db_path), check=True,
                   capture_output=True)
    with reaped([start_flow(db_path)]) as procs:
        start = _last_seq(db_path)
        _wait(lambda: _last_seq(db_path) > start + 300, 120, "the live stream to flow")
        _command(db_path, "ingestion.stop")
        _command(db_path, "incremental.stop")
        for stop in ("clean", "kill -9"):
            proc = procs[-1]
            if stop == "clean":
                _request(db_path, "shutdown")
                assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
            else:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            stopped_at = _last_seq(db_path)
            procs.append(proc := start_flow(db_path))
            _wait(lambda pid=proc.pid: _status_with(db_path, state="running", pid=pid), 120, "the flow to run again")
            status = _status_with(db_path, ingestion="paused", refresh="paused")
            assert status is not None, f"after a {stop} stop the flow came back unpaused"
            time.sleep(1.5)
            assert _last_seq(db_path) == stopped_at, f"the log grew after a {stop} stop while paused"
        _command(db_path, "ingestion.start")
        _wait(lambda: _last_seq(db_path) > stopped_at + 100, 60, "the log to grow once resumed")
        _wait(lambda: _status_with(db_path, ingestion="running", refresh="paused"), 20, "status to say so")
        _request(db_path, "shutdown")
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
