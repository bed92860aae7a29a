"""Scale-out: the flow with 2 workers (one process, or two processes with -i/-a) writes the same
projections as with 1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_replay import projection_rows, settings_for  # tests/ is on sys.path (pytest rootdir import)

from dataflow.bootstrap import append_dataset
from dataflow.generator import MockGenerator
from dataflow.runner import run_dataflow
from storage.event_store import EventStore


def _db_with_history(path: Path, gen: MockGenerator) -> Path:
    with EventStore(path) as store:
        append_dataset(store, gen)
    return path


def test_two_workers_give_the_same_projections_as_one(tmp_path: Path, small_gen: MockGenerator) -> None:
    one = _db_with_history(tmp_path / "one.db", small_gen)
    two = _db_with_history(tmp_path / "two.db", small_gen)
    r1 = run_dataflow(settings_for(one), max_events=3000, workers=1)
    r2 = run_dataflow(settings_for(two), max_events=3000, workers=2)
    assert r1.events_in == r2.events_in == 3000
    assert r2.status["workers"] == 2
    p1, p2 = projection_rows(one), projection_rows(two)
    assert len(p1["profiles"]) > 300
    assert p2 == p1


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_processes_give_the_same_projections_as_one(tmp_path: Path, small_gen: MockGenerator) -> None:
    one = _db_with_history(tmp_path / "one.db", small_gen)
    run_dataflow(settings_for(one), max_events=3000)
    two = _db_with_history(tmp_path / "cluster.db", small_gen)
    s = settings_for(two)
    env = dict(os.environ)
    env.update({  # nested and list settings (edge ranges, allowed hosts) go as JSON, as a user would write them
        f"UPS_{k.upper()}": json.dumps(v) if isinstance(v, (dict, list)) else str(v)
        for k, v in s.model_dump(mode="json").items()
        if v is not None
    })
    addresses = ";".join(f"127.0.0.1:{p}" for p in _free_ports(2))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ups", "dataflow", "--max-events", "3000", "--quiet", "-i", str(i), "-a", addresses],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        for p in procs:
            assert p.wait(timeout=180) == 0, p.stderr.read() if p.stderr else ""
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert projection_rows(two) == projection_rows(one)
