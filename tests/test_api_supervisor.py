"""``ups up``'s supervisor with stand-in child processes (real processes, small scripts): crash restarts
with a limit, a clean dataflow stop is not a crash, the API's exit ends everything, Ctrl-C stops both,
and a database switch moves the dataflow."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from config.settings import Settings
from storage.db import connect
from storage.operations import OpsHistory, Status
from ups.supervisor import Supervisor, active_db

CRASH = [sys.executable, "-c", "import time, sys; time.sleep(0.2); sys.exit(3)"]
CLEAN = [sys.executable, "-c", "import time; time.sleep(0.2)"]
FOREVER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _settings(db: Path, **kw: object) -> Settings:
    return Settings(db=db, restart_backoff=0.05, shutdown_timeout=3, **kw)


def _run(sup: Supervisor) -> tuple[threading.Thread, dict[str, int]]:
    out: dict[str, int] = {}
    t = threading.Thread(target=lambda: out.update(code=sup.run()), daemon=True)
    t.start()
    return t, out


def _supervise(
    db: Path, flow: Callable[[Path], list[str]], api: Callable[[Path], list[str]], **settings: object
) -> tuple[Supervisor, list[str], threading.Thread, dict[str, int]]:
    """A started supervisor of these children, what it said, and its running loop."""
    said: list[str] = []
    sup = Supervisor(_settings(db, **settings), dataflow_argv=flow, api_argv=api, say=said.append)
    sup.start()
    return sup, said, *_run(sup)


def _until(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_a_crashing_dataflow_is_restarted_until_the_limit(db_path: Path) -> None:
    sup, said, t, out = _supervise(db_path, lambda db: CRASH, lambda db: FOREVER, max_restarts=2)
    _until(lambda: any("not restarting" in m for m in said), 20)
    assert sum("restarting in" in m for m in said) == 2 and any("3 times" in m for m in said)
    log = (db_path.parent / "ups.state" / "logs" / "supervisor.log").read_text()
    assert log.count("dataflow crashed (exit code 3)") == 3
    assert sup.api.alive()  # the API keeps serving without a dataflow
    conn = connect(db_path)
    status = Status(conn).get("dataflow")
    conn.close()
    # /health tells it too
    assert status is not None and status["state"] == "failed" and "ups up gave up on the dataflow" in status["error"]
    sup.stop()
    t.join(timeout=10)
    assert out["code"] == 0 and not sup.api.alive()


def test_a_crashed_api_is_restarted_and_the_dataflow_goes_on(db_path: Path) -> None:
    runs: list[int] = []

    def api_argv(db: Path) -> list[str]:  # crashes on its first two runs, then serves
        runs.append(1)
        return CRASH if len(runs) <= 2 else FOREVER

    sup, _, t, out = _supervise(db_path, lambda db: FOREVER, api_argv, max_restarts=3)
    flow = sup.flow.proc
    _until(lambda: len(runs) == 3 and sup.api.alive(), 20)
    assert len(runs) == 3 and sup.api.alive() and t.is_alive()
    assert sup.flow.proc is flow and sup.flow.alive()  # the dataflow was left alone
    log = (db_path.parent / "ups.state" / "logs" / "supervisor.log").read_text()
    assert log.count("api crashed (exit code 3); restarting in") == 2
    sup.stop()
    t.join(timeout=20)
    assert out["code"] == 0 and not sup.api.alive() and not sup.flow.alive()


def test_an_api_that_keeps_crashing_is_given_up_loudly_and_everything_stops(db_path: Path) -> None:
    sup, said, t, out = _supervise(db_path, lambda db: FOREVER, lambda db: CRASH, max_restarts=2)
    t.join(timeout=30)
    assert not t.is_alive() and out["code"] == 1
    assert sum("restarting in" in m for m in said) == 2
    assert any("api crashed (exit code 3) 3 times" in m for m in said)
    assert any("giving up on the API" in m for m in said) and not sup.flow.alive()
    assert "giving up on the API" in (db_path.parent / "ups.state" / "logs" / "supervisor.log").read_text()


def test_a_dataflow_that_refuses_to_start_is_not_restarted_and_its_reason_is_told(db_path: Path) -> None:
    """Exit status 2: the flow refused to start (e.g. damaged recovery state) and said why in its status row."""
    refuse = [sys.executable, "-c", (
        "import sys; from dataflow.control import record_failure; "
        f"record_failure({str(db_path)!r}, 'the recovery state is damaged: try --reset-recovery'); sys.exit(2)"
    )]
    sup, said, t, out = _supervise(db_path, lambda db: refuse, lambda db: FOREVER)
    _until(lambda: any("refused to start" in m for m in said), 30)
    time.sleep(0.5)
    assert [m for m in said if "dataflow" in m] == [(
        "the dataflow refused to start (exit code 2): the recovery state is damaged: try --reset-recovery; "
        "not restarting it"
    )]
    assert sup.api.alive()
    sup.stop()
    t.join(timeout=10)
    assert out["code"] == 0


def test_a_clean_dataflow_stop_is_not_restarted_and_the_api_exit_ends_all(db_path: Path) -> None:
    said: list[str] = []
    sup = Supervisor(_settings(db_path), dataflow_argv=lambda db: CLEAN,
                     api_argv=lambda db: [sys.executable, "-c", "import time; time.sleep(1.5)"], say=said.append)
    sup.start()
    t, out = _run(sup)
    t.join(timeout=15)
    assert not t.is_alive() and out["code"] == 0
    assert not any("crashed" in m for m in said)
    assert any("dataflow stopped" in m for m in said) and any("the API exited" in m for m in said)


def test_ctrl_c_stops_both(db_path: Path) -> None:
    sup = Supervisor(_settings(db_path), dataflow_argv=lambda db: FOREVER, api_argv=lambda db: FOREVER,
                     say=lambda m: None)
    sup.start()
    t, out = _run(sup)
    time.sleep(0.5)
    flow, api = sup.flow.proc, sup.api.proc
    sup.stop()  # what the SIGINT handler does
    t.join(timeout=20)
    assert out["code"] == 0
    assert flow is not None and api is not None and flow.poll() is not None and api.poll() is not None


def test_the_dataflow_follows_a_database_switch(db_path: Path, tmp_path: Path) -> None:
    new = tmp_path / "ups.gen2.db"
    connect(new).close()
    started: list[Path] = []

    def flow_argv(db: Path) -> list[str]:
        started.append(db)
        return FOREVER

    sup = Supervisor(_settings(db_path), dataflow_argv=flow_argv, api_argv=lambda db: FOREVER, say=lambda m: None)
    sup.start()
    t, _ = _run(sup)
    conn = connect(db_path)
    OpsHistory(conn).record("db.switch", f"switched to {new}", {"db": str(new)}, source="api")
    conn.close()
    deadline = time.monotonic() + 20
    while not (started[-1] == new and sup.flow.alive()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started == [db_path, new] and sup.db == new and sup.flow.alive()
    assert active_db(db_path) == new
    sup.stop()
    t.join(timeout=20)
