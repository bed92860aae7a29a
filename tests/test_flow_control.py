"""Commands and status of the running flow: unit level, and with a real `ups dataflow` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from dataflow.control import COMMANDS, STATUS_KEYS, FlowControl, ControlLoop
from storage import DbLocation, open_store
from storage.event_store import EventStore
from storage.operations import OpsHistory, Status
from storage.projections import Checkpoints


def test_control_loop_applies_and_resolves_commands(db_path: Path) -> None:
    with EventStore(db_path) as store:
        ops = OpsHistory(store.conn)
        done_before = ops.record("ingestion.start", "applied earlier", source="api")  # history: not resolved again
        ids = {
            "stop": ops.request("ingestion.stop", source="test"),
            "bad_rate": ops.request("generator.config", {"rate": -3}, source="test"),
            "rate": ops.request("generator.config", {"rate": 750, "delay": 0.25}, source="test"),
            "refresh": ops.request("incremental.stop", source="test"),
            "other": ops.request("explainer.clear", source="test"),  # not the flow's: left alone
        }
    control = FlowControl()
    sup = ControlLoop(db_path, control, status_interval=0.05, poll_interval=0.02)
    sup.start()
    deadline = time.time() + 10
    while time.time() < deadline:
        with EventStore(db_path) as store:
            if OpsHistory(store.conn).get(ids["refresh"])["state"] != "pending":  # type: ignore[index]
                break
        time.sleep(0.05)
    final = sup.finish()
    assert control.ingestion_paused and control.refresh_paused
    assert (control.rate, control.delay) == (750.0, 0.25)
    with EventStore(db_path) as store:
        ops = OpsHistory(store.conn)
        got = {k: ops.get(i) for k, i in ids.items()}
        status = Status(store.conn).get("dataflow")
        assert ops.get(done_before)["effect"] == "applied earlier"  # type: ignore[index]
    assert got["stop"]["state"] == "applied" and "ingestion paused" in got["stop"]["effect"]
    assert got["bad_rate"]["state"] == "rejected" and "rate must be within" in got["bad_rate"]["effect"]
    assert got["rate"]["state"] == "applied" and "750" in got["rate"]["effect"]
    assert got["refresh"]["state"] == "applied" and "no refresh step" in got["refresh"]["effect"]
    assert got["other"]["state"] == "pending"
    assert status is not None and final is not None
    assert set(STATUS_KEYS) <= set(status)
    assert status["state"] == "stopped" and status["ingestion"] == "paused" and status["refresh"] == "off"
    assert status["pid"] == os.getpid()


def test_the_flow_document_shows_the_refresher_of_another_process(store_db: DbLocation) -> None:
    """In a cluster the refresher runs on one worker of any process, while process 0 alone writes the
    ``dataflow`` document: that document carries the refresher's figures and names its process."""
    open_store(store_db).close()
    refresher, first = FlowControl(refresh_attached=True), FlowControl(refresh_attached=True)
    refresher.set_refresh_status(refresh_queue=7, model_version=3, device="cpu")
    loops = [ControlLoop(store_db, first, status_interval=0.05, poll_interval=0.02, process_id=0),
             ControlLoop(store_db, refresher, status_interval=0.05, poll_interval=0.02, process_id=1)]
    for loop in loops:
        loop.start()
    deadline = time.time() + 10
    while time.time() < deadline:
        with open_store(store_db) as store:
            running = store.status.get("dataflow") or {}
        if running.get("model_version") == 3:
            break
        time.sleep(0.05)
    final = [loop.finish() for loop in loops]
    assert running["refresh_queue"] == 7 and running["refresh_process"] == 1 and running["device"] == "cpu"
    assert final[1] is None  # process 1 writes no flow document
    assert final[0] is not None and final[0]["state"] == "stopped" and final[0]["model_version"] == 3
    with open_store(store_db) as store:
        rows = store.status.all()
    assert rows["dataflow.refresh.1"]["refresh_state"] == "stopped" and "dataflow.refresh.0" not in rows


def test_unknown_command_is_rejected_with_the_known_list() -> None:
    state, effect = FlowControl().apply("ingestion.restart", {})
    assert state == "rejected" and all(c in effect for c in COMMANDS)


# ------------------------------------------------------------------------------ with a real process


def _env(db: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        UPS_DB=str(db),
        UPS_USERS="200",
        UPS_PRODUCTS="20",
        UPS_APPS="12",
        UPS_LIVE_RATE="1500",
        UPS_SNAPSHOT_INTERVAL="0.5",
        UPS_STATUS_INTERVAL="0.2",
        UPS_COMMAND_POLL_INTERVAL="0.1",
        UPS_FLUSH_INTERVAL="0.2",
        UPS_PROFILE_SHARDS="8",
    )
    env.update(extra)
    return env


def _wait(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _last_seq(db: Path) -> int:
    with EventStore(db) as store:
        return store.last_seq()


def _request(db: Path, command: str, params: dict[str, Any] | None = None) -> int:
    with EventStore(db) as store, store.transaction() as conn:
        return OpsHistory(conn).request(command, params, source="test")


def _resolved(db: Path, op_id: int) -> dict[str, Any] | None:
    with EventStore(db) as store:
        row = OpsHistory(store.conn).get(op_id)
    return row if row and row["state"] != "pending" else None


def _start(db: Path, *, own_group: bool = False) -> subprocess.Popen[str]:
    subprocess.run([sys.executable, "-m", "ups", "generate", "--quiet"], env=_env(db), check=True,
                   capture_output=True)
    return subprocess.Popen(
        [sys.executable, "-m", "ups", "dataflow", "--quiet"],
        env=_env(db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=own_group,
    )


def _processes_on(db: Path) -> list[str]:
    """Command lines of running processes that name this database (the flow's log writer does)."""
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if str(db).encode() in args:
            out.append(b" ".join(args).decode(errors="replace"))
    return out


@pytest.mark.slow
def test_pause_stops_the_log_and_resume_continues_it(db_path: Path) -> None:
    proc = _start(db_path)
    try:
        start = _last_seq(db_path)
        _wait(lambda: _last_seq(db_path) > start + 500, 60, "the live stream to flow")
        op_id = _request(db_path, "ingestion.stop")
        row = _wait(lambda: _resolved(db_path, op_id), 20, "ingestion.stop to be applied")
        assert row["state"] == "applied" and "paused" in row["effect"]
        time.sleep(0.5)  # a batch emitted just before the pause may still be appended
        paused_at = _last_seq(db_path)
        time.sleep(2.0)
        assert _last_seq(db_path) == paused_at, "the log grew while ingestion was paused"
        # a second flow on the same database is refused while this one runs
        second = subprocess.run([sys.executable, "-m", "ups", "dataflow", "--max-events", "10"], env=_env(db_path),
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "already running" in second.stderr
        status = _wait(lambda: _status_with(db_path, ingestion="paused"), 10, "status to say paused")
        assert status["state"] == "running" and status["last_seq"] == paused_at
        # the projection catches up while paused
        _wait(lambda: _status_with(db_path, profiles_seq=paused_at), 20, "profiles to catch up")

        op_id = _request(db_path, "ingestion.start")
        _wait(lambda: _resolved(db_path, op_id), 20, "ingestion.start to be applied")
        _wait(lambda: _last_seq(db_path) > paused_at + 300, 30, "the log to grow again")

        op_id = _request(db_path, "shutdown")
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
        assert _resolved(db_path, op_id)["state"] == "applied"  # type: ignore[index]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read() if proc.stdout else ""
    assert "dataflow stopped:" in out
    with EventStore(db_path) as store:
        status = Status(store.conn).get("dataflow")
        assert status is not None and status["state"] == "stopped"
        # a clean stop leaves the projection complete
        assert Checkpoints(store.conn).get("profiles") == store.last_seq()


def _status_with(db: Path, **want: Any) -> dict[str, Any] | None:
    with EventStore(db) as store:
        st = Status(store.conn).get("dataflow")
    if st and all(st.get(k) == v for k, v in want.items()):
        return st
    return None


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_a_signal_stops_cleanly(db_path: Path, how: str) -> None:
    """SIGTERM to the flow, or SIGINT to its whole process group as Ctrl-C in a terminal sends it (its log
    writer process too): the flow stops cleanly, the projection complete, the writer gone."""
    proc = _start(db_path, own_group=how == "ctrl-c")
    try:
        start = _last_seq(db_path)
        _wait(lambda: _last_seq(db_path) > start + 300, 60, "the live stream to flow")
        assert any("log_writer" in p for p in _processes_on(db_path))
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with EventStore(db_path) as store:
        assert Status(store.conn).get("dataflow")["state"] == "stopped"  # type: ignore[index]
        assert Checkpoints(store.conn).get("profiles") == store.last_seq()
    _wait(lambda: not _processes_on(db_path), 10, "the log writer to exit")
