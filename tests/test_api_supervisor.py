"""``ups up``'s supervisor with stand-in child processes (real processes, small scripts): crash restarts
with a limit, a clean dataflow stop is not a crash, the API's exit ends everything, Ctrl-C stops both,
and a database switch moves the dataflow."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from storage.db import connect
from storage.projections import OpsHistory
from config.settings import Settings
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


def test_a_crashing_dataflow_is_restarted_until_the_limit(db_path: Path) -> None:
    said: list[str] = []
    sup = Supervisor(_settings(db_path, max_restarts=2), dataflow_argv=lambda db: CRASH,
                     api_argv=lambda db: FOREVER, say=said.append)
    sup.start()
    t, out = _run(sup)
    deadline = time.monotonic() + 20
    while not any("not restarting" in m for m in said) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sum("restarting in" in m for m in said) == 2 and any("3 times" in m for m in said)
    log = (db_path.parent / "ups.state" / "logs" / "supervisor.log").read_text()
    assert log.count("dataflow crashed (exit code 3)") == 3
    assert sup.api.alive()  # the API keeps serving without a dataflow
    sup.stop()
    t.join(timeout=10)
    assert out["code"] == 0 and not sup.api.alive()


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
