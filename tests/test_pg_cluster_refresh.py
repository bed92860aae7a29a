"""The embedding refresh of a Bytewax cluster over PostgreSQL: one refresher for the whole cluster
(one keyed step, so one worker of one process runs it), its figures in the flow's status document, and
the users the cluster's live events touched get fresh embeddings. (Which process Bytewax gives the key
is its routing's choice; the document's merge of another process's figures is checked in
``test_flow_control``.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from dataflow.control import REFRESH_COMPONENT
from scoring.training import train_hgt
from storage import open_store

from flow_processes import reaped
from test_pg_cluster import SMALL, _addresses, _env

pytestmark = pytest.mark.slow

N = 3000
MODEL = dict(hgt_hidden=16, embedding_dim=8, train_batch_edges=512, refresh_budget=64, refresh_fanouts="all,all")


def _refresh_rows(url: str) -> dict[str, dict[str, Any]]:
    with open_store(url) as store:
        return {k: v for k, v in store.status.all().items() if k.startswith(f"{REFRESH_COMPONENT}.")}


def test_a_cluster_runs_one_refresher_whose_status_process_0_reports(pg_url: str, tmp_path: Path) -> None:
    env = _env(pg_url, tmp_path / "state")
    env.update({f"UPS_{k.upper()}": str(v) for k, v in MODEL.items()})
    # (ten seconds of events: the refresher's process starts while they come, on a loaded machine too)
    env.update(UPS_REFRESH_TICK_S="0.1", UPS_LIVE_RATE="300")
    gen = subprocess.run([sys.executable, "-m", "ups", "generate", "--quiet"], env=env, capture_output=True, text=True)
    assert gen.returncode == 0, gen.stderr
    train_hgt(Settings(db=pg_url, device="cpu", **SMALL, **MODEL), epochs=1)
    with open_store(pg_url) as store:
        before = store.last_seq()
    argv = [sys.executable, "-m", "ups", "dataflow", "--max-events", str(N), "--quiet", "-a", _addresses()]
    procs = [subprocess.Popen([*argv, "-i", str(i)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    seen: dict[str, set[int]] = {}  # each refresh row's pids, sampled while the cluster runs
    reported: set[Any] = set()  # the refresher process named in process 0's document
    with reaped(procs):
        deadline = time.monotonic() + 300
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            for name, doc in _refresh_rows(pg_url).items():
                seen.setdefault(name, set()).add(doc["refresh_pid"])
            with open_store(pg_url) as store:
                doc = store.status.get("dataflow") or {}
            if doc.get("state") == "running" and "refresh_process" in doc:
                reported.add(doc["refresh_process"])
            time.sleep(0.2)
        for p in procs:
            assert p.wait(timeout=60) == 0, p.stderr.read() if p.stderr else ""
    pids = [p.pid for p in procs]
    rows = _refresh_rows(pg_url)
    # one refresher in the whole cluster: one process wrote refresh figures, always the same one
    assert len(rows) == 1, rows
    (name, row), = rows.items()
    runner = int(name.rsplit(".", 1)[1])
    assert seen == {name: {pids[runner]}} and row["refresh_process"] == runner and row["refresh_state"] == "stopped"
    # process 0 writes the flow's document and shows the refresher's figures, whichever process runs it
    assert reported == {runner}
    with open_store(pg_url) as store:
        flow = store.status.get("dataflow")
        assert flow is not None and flow["state"] == "stopped" and flow["pid"] == pids[0]
        assert flow["refresh_process"] == runner and flow["model_version"] == 1 and flow["refresh"] == "running"
        assert store.count() == store.last_seq() == before + N
        live_users = {e.user_id for e in store.read(from_seq=before + 1) if e.user_id}
        stale = [u for u in live_users if (r := store.embeddings.get("user", u)) is None or r.seq <= before]
    # every user a live event touched got an embedding computed after that event (drained at EOF)
    assert live_users and not stale
