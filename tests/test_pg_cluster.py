"""A Bytewax cluster over PostgreSQL: two ``ups dataflow -i/-a`` processes on one store, one of them
killed with SIGKILL mid-stream and the cluster restarted: every event once, profiles equal a replay;
with one state folder for both, and with a folder each (as on two hosts: they share the database URL
alone, their recovery partitions split between them)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config.settings import Settings
from dataflow.generator import GeneratorConfig
from dataflow.runner import replay
from pg_server import PostgresServer
from storage import open_store

pytestmark = pytest.mark.slow

N = 6000
SMALL = dict(users=300, products=20, apps=12, events_per_user=10, seed=7, profile_shards=8)


def _env(url: str, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPS_")}
    env.update({f"UPS_{k.upper()}": str(v) for k, v in SMALL.items()})
    env.update(UPS_DB=url, UPS_PG_STATE_DIR=str(state), UPS_DEVICE="cpu", UPS_LIVE_RATE="2000",
               UPS_BATCH_SIZE="300", UPS_SNAPSHOT_INTERVAL="0.3", UPS_FLUSH_INTERVAL="0.2", UPS_STATUS_INTERVAL="0.3")
    return env


def _addresses() -> str:
    socks = [socket.socket() for _ in range(2)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ";".join(f"127.0.0.1:{p}" for p in ports)


def _cluster(envs: list[dict[str, str]], addresses: str) -> list[subprocess.Popen[str]]:
    argv = [sys.executable, "-m", "ups", "dataflow", "--max-events", str(N), "--quiet", "-a", addresses]
    return [subprocess.Popen([*argv, "-i", str(i)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True) for i, env in enumerate(envs)]


def _last_seq(url: str) -> int:
    with open_store(url) as store:
        return store.last_seq()


@pytest.mark.parametrize("folders", ["shared", "one per process"])
def test_a_cluster_killed_and_restarted_appends_and_folds_each_event_once(
    pg_url: str, pg_server: PostgresServer, tmp_path: Path, folders: str
) -> None:
    state = tmp_path / "state"
    env = _env(pg_url, state)
    # two partitions: with a folder each, each process keeps one
    envs = [{**env, "UPS_RECOVERY_PARTITIONS": "2"} for _ in range(2)]
    if folders != "shared":
        for i, e in enumerate(envs):
            e["UPS_PG_STATE_DIR"] = str(tmp_path / f"host{i}.state")
    gen = subprocess.run([sys.executable, "-m", "ups", "generate", "--quiet"], env=env, capture_output=True, text=True)
    assert gen.returncode == 0, gen.stderr
    base = _last_seq(pg_url)
    addresses = _addresses()
    procs = _cluster(envs, addresses)
    try:
        deadline = time.monotonic() + 180
        while _last_seq(pg_url) < base + N // 3 and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs if p.stderr]
            time.sleep(0.1)
        procs[1].send_signal(signal.SIGKILL)
        assert procs[1].wait(timeout=30) == -signal.SIGKILL
        try:  # the other process loses its peer: it ends, or is ended
            procs[0].wait(timeout=60)
        except subprocess.TimeoutExpired:
            procs[0].kill()
            procs[0].wait()
        assert _last_seq(pg_url) < base + N  # killed mid-stream
        procs = _cluster(envs, addresses)
        for p in procs:
            assert p.wait(timeout=300) == 0, p.stderr.read() if p.stderr else ""
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
    if folders != "shared":  # each folder holds its own share of the recovery partitions
        assert [sorted(p.name for p in (tmp_path / f"host{i}.state" / "recovery").glob("part-*.sqlite3"))
                for i in range(2)] == [["part-0.sqlite3"], ["part-1.sqlite3"]]
    s = Settings(db=pg_url, pg_state_dir=state, **SMALL)
    tag = GeneratorConfig.from_settings(s).tag
    with open_store(pg_url) as store:
        live = [e.event_id for e in store.read(from_seq=base + 1) if e.event_id.startswith(f"{tag}-l")]
        assert sorted(live) == sorted(f"{tag}-l{i}" for i in range(N)), "an event is missing or appended twice"
        assert store.count() == store.last_seq() == base + N  # no gap in the seqs
        assert store.checkpoints.get("profiles") == base + N
        profiles = sorted(store.profiles.iter_all())
        rules = [(r.name, r.condition, r.weight, r.seq) for r in store.rules.list()]
    clean = pg_server.create_database()
    replay(s, into=clean)
    with open_store(clean) as store:
        assert sorted(store.profiles.iter_all()) == profiles
        assert [(r.name, r.condition, r.weight, r.seq) for r in store.rules.list()] == rules
