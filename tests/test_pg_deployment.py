"""UPS on a shared PostgreSQL store with real processes: two API nodes serving one store, the dataflow
and the API through a server restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from console_harness import Server, free_port, http, ups_env
from pg_server import PostgresServer
from storage import open_store

pytestmark = pytest.mark.slow

SMALL = {"UPS_USERS": "200", "UPS_PRODUCTS": "20", "UPS_APPS": "12", "UPS_EVENTS_PER_USER": "10", "UPS_SEED": "7"}


def _env(url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return ups_env(Path(url), UPS_DB=url, UPS_PG_STATE_DIR=str(tmp_path / "state"), UPS_EXPLAIN_WORKERS="0",
                   **SMALL, **extra)


def _ups(env: dict[str, str], *args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "ups", *args, "--quiet"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr


def _api(url: str, tmp_path: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "ups", "api", "--host", "127.0.0.1", "--port", str(port)]
    return Server(argv, port, _env(url, tmp_path), tmp_path / f"api-{port}.log")


@pytest.fixture
def served_db(pg_url: str, tmp_path: Path) -> str:
    """A generated dataset, folded into profiles, in a fresh PostgreSQL database."""
    env = _env(pg_url, tmp_path)
    _ups(env, "generate")
    _ups(env, "replay")
    return pg_url


def _rule(name: str) -> dict[str, Any]:
    return {"name": name, "description": "made on one node", "weight": 0.3, "condition": "monthly_fee > 80"}


def test_two_api_nodes_serve_one_store(served_db: str, tmp_path: Path) -> None:
    a, b = _api(served_db, tmp_path), _api(served_db, tmp_path)
    try:
        a.start()
        b.start()
        status, body = http("POST", f"{a.url}/api/v1/rules", _rule("fee_over_80"))
        assert status == 201, body
        # the other node serves it at once: its next request sees the new rules version
        status, rules = http("GET", f"{b.url}/api/v1/rules")
        assert status == 200 and rules["version"] == body["rules_version"]
        assert "fee_over_80" in {r["name"] for r in rules["rules"]}
        status, again = http("POST", f"{b.url}/api/v1/rules", _rule("fee_over_80"))
        assert status == 409, again  # one store: the name is taken for both nodes
        # both nodes created the default rules at start, once between them
        names = [r["name"] for r in rules["rules"]]
        assert len(names) == len(set(names))
        with open_store(served_db) as store:
            created = [e.payload["name"] for e in store.read(types=["rule.created"])]
        assert len(created) == len(set(created))
    finally:
        a.stop()
        b.stop()


def test_the_api_answers_503_while_postgresql_is_down_and_recovers_by_itself(
    served_db: str, tmp_path: Path, pg_server: PostgresServer
) -> None:
    api = _api(served_db, tmp_path)
    try:
        api.start()
        assert http("GET", f"{api.url}/api/v1/rules")[0] == 200
        pg_server.stop()
        try:
            status, body = http("GET", f"{api.url}/api/v1/rules")
            assert status == 503, body
            assert "cannot be reached" in body["message"] and "127.0.0.1" in body["message"]
        finally:
            pg_server.start()
        deadline = time.monotonic() + 30
        while (status := http("GET", f"{api.url}/api/v1/rules")[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert status == 200
        assert api.alive()
    finally:
        api.stop()


def test_the_flow_waits_out_a_restart_and_loses_or_doubles_nothing(
    served_db: str, tmp_path: Path, pg_server: PostgresServer
) -> None:
    """``ups dataflow --max-events N`` on PostgreSQL; the server stops for a few seconds mid-stream and
    starts again: the flow finishes by itself, each live event is in the log once, no seq is missing,
    and the profiles equal a replay of the log into a fresh database."""
    from dataflow.generator import GeneratorConfig
    from dataflow.runner import replay
    from config.settings import Settings

    n = 4000
    env = _env(served_db, tmp_path, UPS_LIVE_RATE="1000", UPS_BATCH_SIZE="200", UPS_SNAPSHOT_INTERVAL="0.3",
               UPS_FLUSH_INTERVAL="0.2", UPS_PROFILE_SHARDS="8", UPS_STATUS_INTERVAL="0.3")
    with open_store(served_db) as store:
        base = store.last_seq()
    proc = subprocess.Popen([sys.executable, "-m", "ups", "dataflow", "--max-events", str(n), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            with open_store(served_db) as store:
                if store.last_seq() >= base + n // 3:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        pg_server.stop()
        time.sleep(4)
        assert proc.poll() is None  # waiting for the server, not failed
        pg_server.start()
        assert proc.wait(timeout=240) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    s = Settings(db=served_db, pg_state_dir=tmp_path / "state", users=200, products=20, apps=12,
                 events_per_user=10, seed=7, profile_shards=8)
    tag = GeneratorConfig.from_settings(s).tag
    with open_store(served_db) as store:
        live = [e.event_id for e in store.read(from_seq=base + 1) if e.event_id.startswith(f"{tag}-l")]
        assert sorted(live) == sorted(f"{tag}-l{i}" for i in range(n)), "an event is missing or doubled"
        assert store.count() == store.last_seq() == base + n  # no gap in the seqs
        profiles = sorted(store.profiles.iter_all())
        assert store.checkpoints.get("profiles") == base + n
    clean = pg_server.create_database()
    replay(s, into=clean)
    with open_store(clean) as store:
        assert sorted(store.profiles.iter_all()) == profiles
