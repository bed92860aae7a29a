"""One flow per store: the writer lock beside the database, in-process and with real `ups dataflow` processes
(a second flow, cluster flags, a flow whose status says stopped or goes stale, kill -9, a copied database)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from flow_processes import reaped, start_flow

# tests/ is on sys.path (pytest rootdir import)
from test_flow_control import _env, _last_seq, _request, _wait
from test_flow_workers import _free_ports

from config.settings import Settings
from dataflow.flow_lock import FlowLock, FlowLocked, flow_holder
from dataflow.runner import FlowConfigError, replay
from storage import DbLocation, PostgresUrl
from storage.event_store import EventStore
from storage.operations import Status
from ups.cli import main


def _state_dirs(tmp_path: Path, db: DbLocation) -> Callable[[int], Path]:
    """Each holder's state folder: one beside a SQLite file (its lock files are there), and one per
    holder on a PostgreSQL store (as on different hosts: the locks are leases in the database)."""
    if isinstance(db, PostgresUrl):
        return lambda i: tmp_path / f"host{i}.state"
    return lambda i: tmp_path / "ups.state"


def test_a_second_holder_is_refused_with_the_first_named_until_it_lets_go(tmp_path: Path, store_db: DbLocation) -> None:
    db, state = store_db, _state_dirs(tmp_path, store_db)
    first = FlowLock(state(0), db)
    first.acquire()
    holder = flow_holder(state(1), db)
    assert holder is not None and holder.pid == os.getpid() and holder.role == "dataflow"
    for i, role in enumerate(("dataflow", "replay"), 1):
        with pytest.raises(FlowLocked, match=rf"a dataflow \(pid {os.getpid()} on .*already running on {re.escape(str(db))}"):
            FlowLock(state(i), db, role=role).acquire()
    first.release()
    assert flow_holder(state(0), db) is None
    with FlowLock(state(1), db, role="replay"):
        assert flow_holder(state(2), db).role == "replay"  # type: ignore[union-attr]


def test_cluster_processes_join_only_their_own_process_0(tmp_path: Path, store_db: DbLocation) -> None:
    db, state = store_db, _state_dirs(tmp_path, store_db)
    ours, theirs = ["127.0.0.1:7001", "127.0.0.1:7002"], ["127.0.0.1:7101", "127.0.0.1:7102"]
    # a process 1 whose process 0 never comes gives up, saying so
    with pytest.raises(FlowLocked, match="did not start .* is process 0 running"):
        FlowLock(state(1), db, process_id=1, addresses=ours, join_timeout=0.3).acquire()
    zero = FlowLock(state(0), db, process_id=0, addresses=ours)
    zero.acquire()
    one = FlowLock(state(1), db, process_id=1, addresses=ours)
    one.acquire()  # joins
    with pytest.raises(FlowLocked, match="process 1 of a cluster is already running"):
        FlowLock(state(2), db, process_id=1, addresses=ours).acquire()
    with pytest.raises(FlowLocked, match="joins only its own cluster"):
        FlowLock(state(3), db, process_id=2, addresses=[*theirs, "127.0.0.1:7103"]).acquire()
    with pytest.raises(FlowLocked, match="already running"):
        FlowLock(state(4), db).acquire()  # a single-process flow
    zero.release()
    # a process of the old cluster still runs: a new process 0 of another cluster (or a lone flow) waits for it
    with pytest.raises(FlowLocked, match=r"process 1 of the cluster 127.0.0.1:7001;127.0.0.1:7002\) is still running"):
        FlowLock(state(5), db, process_id=0, addresses=theirs).acquire()
    one.release()
    with FlowLock(state(6), db, process_id=0, addresses=theirs):
        pass


def _dataflow(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ups", "dataflow", "--quiet", *args], env=_env(db),
                          capture_output=True, text=True, timeout=180, check=False)


def _generate(db: Path) -> None:
    subprocess.run([sys.executable, "-m", "ups", "generate", "--quiet"], env=_env(db), check=True, capture_output=True)


def _running_status(db: Path) -> dict | None:
    with EventStore(db) as store:
        doc = Status(store.conn).get("dataflow")
    return doc if doc and doc["state"] == "running" else None


@pytest.mark.slow
def test_one_flow_per_store_with_real_processes(tmp_path: Path) -> None:
    db = tmp_path / "ups.db"
    _generate(db)
    with reaped([start_flow(db)]) as procs:
        first = procs[0]
        status = _wait(lambda: _running_status(db), 120, "the first flow to run")
        assert status["pid"] == first.pid
        refusal = f"a dataflow (pid {first.pid} on "
        # a second flow, alone or with cluster flags, is refused and told who runs
        for args in ((), ("-i", "0", "-a", "127.0.0.1:1;127.0.0.1:2"), ("-i", "1", "-a", "127.0.0.1:1;127.0.0.1:2")):
            second = _dataflow(db, "--max-events", "10", *args)
            assert second.returncode == 2 and refusal in second.stderr, (args, second.stderr)
        # ... and so is a replay into its database
        with pytest.raises(FlowConfigError, match="already running"):
            replay(Settings(db=db))
        # the status row says "stopped" (as a flow that is stopping writes it) while the process still runs
        with EventStore(db) as store, store.transaction() as conn:
            Status(conn).put("dataflow", {**status, "state": "stopped"})
        assert _dataflow(db, "--max-events", "10").returncode == 2
        # a frozen flow: its status row goes stale, the process still holds the store
        first.send_signal(signal.SIGSTOP)
        try:
            assert _dataflow(db, "--max-events", "10").returncode == 2
        finally:
            first.send_signal(signal.SIGCONT)
        # a copy of the live database (its status row names a live pid) runs a flow of its own
        copy = tmp_path / "backup.db"
        with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        shutil.copytree(tmp_path / "ups.state", tmp_path / "backup.state")  # with its state, lock file included
        assert _running_status(copy) is not None
        on_copy = _dataflow(copy, "--max-events", "10")
        assert on_copy.returncode == 0, on_copy.stderr
        # kill -9: the lock dies with its holder, the next flow starts at once and resumes
        seq = _last_seq(db)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert flow_holder(tmp_path / "ups.state", db) is None
        procs.append(nxt := start_flow(db))
        _wait(lambda: _last_seq(db) > seq + 100, 120, "the next flow to append")
        _request(db, "shutdown")
        assert nxt.wait(timeout=60) == 0, nxt.stderr.read() if nxt.stderr else ""


@pytest.mark.slow
def test_a_running_cluster_holds_the_store_as_a_whole(tmp_path: Path) -> None:
    db = tmp_path / "ups.db"
    _generate(db)
    addresses = ";".join(f"127.0.0.1:{p}" for p in _free_ports(2))
    # process 1 first: it waits for its process 0
    with reaped([start_flow(db, "-i", str(i), "-a", addresses) for i in (1, 0)]) as cluster:
        start = _last_seq(db)
        _wait(lambda: _last_seq(db) > start + 200, 120, "the cluster to append")
        holder = flow_holder(tmp_path / "ups.state", db)
        assert holder is not None and holder.pid == cluster[1].pid and holder.addresses == tuple(addresses.split(";"))
        alone = _dataflow(db, "--max-events", "10")
        assert alone.returncode == 2 and f"process 0 of the cluster {addresses}" in alone.stderr, alone.stderr
        again = _dataflow(db, "-i", "1", "-a", addresses)
        assert again.returncode == 2 and "process 1 of a cluster is already running" in again.stderr, again.stderr
        _request(db, "shutdown")
        for p in cluster:
            assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
    assert flow_holder(tmp_path / "ups.state", db) is None
    assert _dataflow(db, "--max-events", "10").returncode == 0


def test_ups_up_refuses_a_database_a_flow_runs_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "ups.db"
    with FlowLock(tmp_path / "ups.state", db):
        assert main(["up", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert f"a dataflow (pid {os.getpid()} on " in err and "already running" in err
    assert not db.exists()  # refused before preparing anything
