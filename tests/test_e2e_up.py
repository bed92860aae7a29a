"""End to end with real processes: ``ups up`` on a temporary database with a small dataset.

Waits for /health, queries a user, creates a rule and sees the score and explanation change, stops
ingestion and sees the log stop growing, starts it again, kills the dataflow and sees the supervisor
restart it, runs a sampled refresh job to completion, shuts down through the API and sees every
process exit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from api_support import SYSTEM, needs
from storage.event_store import EventStore

needs(*SYSTEM)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: Any = None, timeout: float = 120) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            last = None
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def last_seq(db: Path) -> int:
    with EventStore(db, readonly=True) as store:
        return store.last_seq()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _rule_changes_the_score(api: Api, user: str, before: dict[str, Any]) -> None:
    # a rule that fires for everyone changes the rule score, the score and the explanation
    status, rule = api.call("POST", "/api/v1/rules",
                            {"name": "e2e_everyone", "weight": 5.0, "condition": "monthly_fee >= 0"})
    assert status == 201, rule
    after = api.get(f"/api/v1/explain/{user}")
    assert after["f_rule"] != before["f_rule"] and after["score"] != before["score"]
    fired = {r["name"]: r["fired"] for r in after["rules"]}
    assert fired.get("e2e_everyone") is True and "e2e_everyone" not in {r["name"] for r in before["rules"]}
    assert api.call("POST", "/api/v1/rules", {"name": "e2e_everyone", "weight": 1, "condition": "1"})[0] == 409


def _ingestion_stops_and_starts(api: Api, db: Path) -> None:
    # ingestion stop: the log stops growing; start: it grows again
    status, ack = api.call("POST", "/api/v1/operations/ingestion/stop")
    assert status == 200 and ack["state"] == "applied" and ack["resulting"] == {"ingestion": "paused"}
    time.sleep(1.5)  # a batch already in flight may still land
    frozen = last_seq(db)
    time.sleep(3)
    assert last_seq(db) == frozen
    status, ack = api.call("POST", "/api/v1/operations/ingestion/start")
    assert status == 200 and ack["state"] == "applied"
    wait_for("the log to grow again", lambda: last_seq(db) > frozen + 20, 30)


def _crashed_processes_are_restarted(api: Api, db: Path, api_pid: int) -> tuple[int, int]:
    """The dataflow killed, then the API: each restarted by the supervisor (the other going on); their new pids."""
    # a crashed dataflow is restarted by the supervisor, and the crash is logged
    flow_pid = api.get("/health")["dataflow"]["pid"]
    os.kill(flow_pid, signal.SIGKILL)

    def new_flow_pid() -> int | None:
        with EventStore(db, readonly=True) as store:
            doc = store.status.get("dataflow") or {}
        pid = doc.get("pid")
        return int(pid) if pid and pid != flow_pid and doc.get("state") == "running" and alive(pid) else None

    restarted = wait_for("the dataflow to be restarted", new_flow_pid, 240)
    assert "dataflow crashed" in (db.parent / "e2e.state" / "logs" / "supervisor.log").read_text()
    wait_for("a live dataflow again", lambda: api.get("/health")["dataflow"]["alive"], 30)

    # a crashed API is restarted too, the dataflow going on
    os.kill(api_pid, signal.SIGKILL)
    api_pid = wait_for("the API to be restarted",
                       lambda: (pid := api.get("/health")["api"]["pid"]) != api_pid and pid, 120)
    assert "api crashed" in (db.parent / "e2e.state" / "logs" / "supervisor.log").read_text()
    assert api.get("/health")["dataflow"]["pid"] == restarted
    return api_pid, restarted


def _sampled_refresh_job_completes(api: Api) -> None:
    # a sampled refresh job to completion
    hgt_before = api.get("/health")["models"]["hgt"]
    status, job = api.call("POST", "/api/v1/graph/refresh?wait=true",
                           {"mode": "full_retrain", "graph_scope": "sampled", "sample_ratio": 0.5, "epochs": 1,
                            "fusion_epochs": 3}, timeout=600)
    assert status == 200 and job["state"] == "succeeded", job
    assert job["result"]["sample_ratio"] == 0.5 and job["result"]["duration_s"] > 0
    assert job["progress"] == 1.0 and api.get(f"/api/v1/jobs/{job['id']}")["state"] == "succeeded"
    assert api.get("/health")["models"]["hgt"] > hgt_before


def test_ups_up_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "e2e.db"
    port = _free_port()
    env = {
        **os.environ,
        "UPS_USERS": "300", "UPS_PRODUCTS": "20", "UPS_APPS": "12", "UPS_EVENTS_PER_USER": "15",
        "UPS_LIVE_RATE": "100", "UPS_DEVICE": "cpu", "UPS_STATUS_INTERVAL": "0.5", "UPS_SNAPSHOT_INTERVAL": "1",
        "UPS_BOOTSTRAP_EPOCHS": "1", "UPS_BOOTSTRAP_FUSION_EPOCHS": "5", "UPS_RESTART_BACKOFF": "0.5",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("UPS_ADMIN_TOKEN", None)
    out = open(tmp_path / "up.out", "wb")
    up = subprocess.Popen([sys.executable, "-m", "ups", "up", "--db", str(db), "--port", str(port)],
                          env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    api = Api(f"http://127.0.0.1:{port}")
    try:
        def printed() -> str | None:
            t = (tmp_path / "up.out").read_text(errors="replace")
            return t if "Ctrl-C stops everything" in t else None

        # "ready" means ready: when the URLs appear, every part is (scoring and explainer loaded, flow running)
        text = wait_for("the URLs printed", printed, 420)
        health = api.get("/health")
        assert health["api"]["scoring"] == "ready" and health["dataflow"]["alive"], health
        assert health["models"]["hgt"] is not None and health["models"]["fusion"] is not None
        api_pid = health["api"]["pid"]
        assert f"http://127.0.0.1:{port}/schema/swagger" in text and f"http://127.0.0.1:{port}/console" in text
        # what it waited for was shown before, and the URLs come once
        assert "starting: waiting for" in text.split("Ctrl-C stops everything")[0], text
        assert text.count(f"console  http://127.0.0.1:{port}/console") == 1, text

        # a user, their score and explanation
        with EventStore(db, readonly=True) as store:
            user = store.profiles.ids(limit=1)[0]
        profile = api.get(f"/api/v1/user/{user}")
        assert profile["user_id"] == user and profile["score"] is not None
        before = api.get(f"/api/v1/explain/{user}")
        assert 0 <= before["score"] <= 1 and before["contributions"]

        _rule_changes_the_score(api, user, before)
        _ingestion_stops_and_starts(api, db)
        api_pid, restarted = _crashed_processes_are_restarted(api, db, api_pid)
        _sampled_refresh_job_completes(api)

        # shutdown through the API: every process exits
        status, body = api.call("POST", "/api/v1/operations/shutdown")
        assert status == 202 and body["state"] == "shutting_down"
        assert up.wait(timeout=90) == 0
        wait_for("the API and dataflow processes to exit",
                 lambda: not alive(api_pid) and not alive(restarted), 30)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
        out.close()
