"""Operations endpoints through Litestar's test client: health, status, commands, metrics, stream,
shutdown, errors, the admin token, body limits."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydantic import TypeAdapter
from litestar.testing import TestClient

from api.app import create_app
from api.auth import check_bind, is_loopback
from api.sse import StreamData, StreamEvent
from api_support import CommandResolver, put_flow_status, settings_for, sse_events, started
from storage.db import connect
from storage.event_store import EventStore
from storage.operations import Jobs, OpsHistory
from storage.projections import Checkpoints

TOKEN = "s3cret-token-0123456"


@pytest.fixture
def client(db_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(db_path, command_ack_timeout=2.0))) as c:
        yield started(c)


def test_health_without_a_dataflow_is_degraded_and_says_why(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "degraded"
    assert body["dataflow"]["alive"] is False
    assert body["models"] == {"hgt": None, "fusion": None}


def test_health_reports_a_running_dataflow(client: TestClient, db_path: Path, small_gen) -> None:
    with EventStore(db_path) as store:
        store.append(list(small_gen.dataset())[:50])
        last = store.last_seq()  # the scoring service may have logged its default rules too
        Checkpoints(store.conn).set("profiles", last - 10)
    put_flow_status(db_path, last_seq=last, events_per_s=123.0, refresh_queue=7, refresh_backfill=4, device="cpu",
                    model_version=2)
    body = client.get("/health").json()
    assert body["status"] == "ok"
    flow = body["dataflow"]
    assert flow["alive"] and flow["state"] == "running" and flow["ingestion"] == "running"
    assert flow["events_per_s"] == 123.0 and flow["refresh_queue"] == 7 and flow["model_version"] == 2
    assert flow["refresh_backfill"] == 4
    assert flow["backlog"] == 10  # logged but not folded yet
    assert flow["last_event_at"] is not None
    # the console's overview shows these beside the state
    assert flow["workers"] == 1 and flow["refreshes_per_s"] == 1.0 and flow["oldest_pending_s"] == 0.1
    assert flow["dead_letters"] == 0 and abs(flow["updated_at"] - time.time()) < 60


def test_a_stale_or_dead_dataflow_is_not_alive(client: TestClient, db_path: Path) -> None:
    put_flow_status(db_path, pid=2**22 + 12345)  # no such process
    assert client.get("/health").json()["dataflow"]["alive"] is False
    assert client.get("/health").json()["dataflow"]["state"] == "stopped"


def test_flow_figures_that_are_not_finite_numbers_are_dropped(client: TestClient, db_path: Path) -> None:
    put_flow_status(db_path, events_per_s="fast", lag_s=True, refresh_queue=None)
    flow = client.get("/health").json()["dataflow"]
    assert flow["events_per_s"] is None and flow["lag_s"] is None and flow["refresh_queue"] is None


def test_commands_are_pending_without_a_dataflow(client: TestClient, db_path: Path) -> None:
    t0 = time.monotonic()
    r = client.post("/api/v1/operations/ingestion/stop")
    assert r.status_code == 200
    body = r.json()
    assert body["state"] == "pending" and "no dataflow" in body["message"]
    assert time.monotonic() - t0 < 1.5  # nobody will apply it: no waiting for the timeout
    conn = connect(db_path)
    assert [o["command"] for o in OpsHistory(conn).pending()] == ["ingestion.stop"]


@pytest.mark.parametrize(
    "path, command, resulting",
    [
        ("ingestion/stop", "ingestion.stop", {"ingestion": "paused"}),
        ("ingestion/start", "ingestion.start", {"ingestion": "running"}),
        ("incremental/stop", "incremental.stop", {"refresh": "paused"}),
        ("incremental/start", "incremental.start", {"refresh": "running"}),
    ],
)
def test_commands_are_acknowledged_with_the_resulting_state(
    client: TestClient, db_path: Path, path: str, command: str, resulting: dict[str, str]
) -> None:
    put_flow_status(db_path)
    with CommandResolver(db_path) as flow:
        r = client.post(f"/api/v1/operations/{path}")
    body = r.json()
    assert r.status_code == 200
    assert body["state"] == "applied" and body["command"] == command
    assert body["effect"] == f"{command} done" and body["resulting"] == resulting
    assert [row["command"] for row in flow.seen] == [command]


def test_status_lists_components_history_and_jobs(client: TestClient, db_path: Path) -> None:
    put_flow_status(db_path)
    client.post("/api/v1/operations/incremental/stop")
    body = client.get("/api/v1/operations/status").json()
    assert body["dataflow"]["alive"] is True
    assert "dataflow" in body["components"]
    assert body["history"][0]["command"] == "incremental.stop"
    assert body["jobs"] == [] and body["log"]["dead_letters"] == 0


def test_operations_metrics_report_process_resources(client: TestClient) -> None:
    body = client.get("/api/v1/operations/metrics").json()
    api = body["processes"]["api"]
    assert api["rss_bytes"] > 10_000_000 and api["threads"] >= 1
    assert body["gpu"] is None  # no CUDA on this machine
    assert set(body) >= {"ingestion", "refresh", "training", "system"}


def test_prometheus_metrics_count_requests_per_route_and_show_the_flow(client: TestClient, db_path: Path) -> None:
    put_flow_status(db_path, refresh_queue=11, lag_s=2.5)
    for _ in range(3):
        client.get("/api/v1/jobs/nope")
    text = client.get("/metrics").text
    assert 'ups_http_requests_total{method="GET",route="/api/v1/jobs/{job_id}",status="404"} 3.0' in text
    assert "ups_http_request_duration_seconds_bucket" in text
    assert "ups_refresh_queue 11.0" in text and "ups_dataflow_lag_seconds 2.5" in text
    last = client.get("/api/v1/operations/status").json()["log"]["last_seq"]
    assert "ups_dataflow_up 1.0" in text and f"ups_events_logged_total {float(last)}" in text


def test_stream_sends_status_changes_and_commands(client: TestClient, db_path: Path) -> None:
    put_flow_status(db_path)
    result: dict[str, Any] = {}
    reader = threading.Thread(
        target=lambda: result.update(r=client.get("/api/v1/operations/stream", params={"timeout": 2}))
    )
    reader.start()
    time.sleep(0.5)  # the stream reports what happens after it was opened
    with CommandResolver(db_path):
        client.post("/api/v1/operations/ingestion/stop")
    reader.join(timeout=15)
    r = result["r"]
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = list(sse_events(r.text))
    assert events[0][0] == "status" and json.loads(events[0][1])["alive"] is True
    for n, (kind, data) in enumerate(events, 1):  # what the OpenAPI schema says the stream sends
        StreamEvent.model_validate({"event": kind, "id": str(n), "data": data})
        TypeAdapter(StreamData).validate_json(data)
    ops = [json.loads(d) for e, d in events if e == "op"]
    # polled: the pending state may or may not be seen, the applied one is
    assert ops and {o["command"] for o in ops} == {"ingestion.stop"} and ops[-1]["state"] == "applied"


def test_stream_ends_at_its_timeout(client: TestClient) -> None:
    t0 = time.monotonic()
    r = client.get("/api/v1/operations/stream", params={"timeout": 0.5, "metrics": "false"})
    assert r.status_code == 200 and 0.4 < time.monotonic() - t0 < 5
    assert [e for e, _ in sse_events(r.text)] == ["status"]  # nothing changed after the first snapshot


def test_shutdown_stops_the_dataflow_then_the_server(db_path: Path) -> None:
    stopped: list[float] = []
    app = create_app(settings_for(db_path, shutdown_timeout=5), stop_server=lambda: stopped.append(time.time()))
    put_flow_status(db_path)
    with TestClient(app) as c, CommandResolver(db_path) as flow:
        r = c.post("/api/v1/operations/shutdown")
        assert r.status_code == 202
        assert r.json()["state"] == "shutting_down" and "shutdown requested" in r.json()["dataflow"]
        deadline = time.monotonic() + 5
        while not stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stopped, "the server was never told to stop"
        assert [row["command"] for row in flow.seen] == ["shutdown"]
        assert c.get("/health").json()["status"] == "shutting_down"
        assert c.post("/api/v1/operations/fusion/train", json={}).status_code == 503


def test_shutdown_without_a_dataflow_leaves_no_pending_command(db_path: Path) -> None:
    stopped: list[bool] = []
    with TestClient(create_app(settings_for(db_path), stop_server=lambda: stopped.append(True))) as c:
        assert c.post("/api/v1/operations/shutdown").json()["dataflow"] == "no dataflow running"
        time.sleep(0.3)
    conn = connect(db_path)
    assert OpsHistory(conn).pending() == []  # a later flow start must not be shut down by it
    assert OpsHistory(conn).list()[0]["state"] == "applied" and stopped


# ------------------------------------------------------------------------------------- errors


def test_errors_are_json(client: TestClient) -> None:
    for method, path, status in [
        ("GET", "/no/such/route", 404),
        ("DELETE", "/health", 405),
        ("GET", "/api/v1/jobs/unknown-job", 404),
    ]:
        r = client.request(method, path)
        assert r.status_code == status
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert body["status"] == status and body["message"]


def test_invalid_bodies_name_the_field_and_the_problem(client: TestClient) -> None:
    r = client.post("/api/v1/operations/fusion/train", json={"samples": -5, "epochs": 10})
    assert r.status_code == 422
    assert r.json()["details"] == [{"field": "body.samples", "problem": "Input should be greater than or equal to 0"}]
    r = client.post("/api/v1/operations/fusion/train", json={"lr": "NaN"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "body.lr"
    r = client.post("/api/v1/operations/fusion/train", json={"unknown": 1})
    assert r.status_code == 422 and "body.unknown" in r.json()["message"]
    r = client.post("/api/v1/operations/fusion/train", json=[1, 2])
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "body"
    r = client.post("/api/v1/operations/fusion/train", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request"
    # where, as every error message says it: line and 1-based column of the body
    r = client.post("/api/v1/operations/fusion/train", content='{"samples": 5,\n "lr": ½}'.encode(),
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["message"].endswith("(at line 2, column 8)"), r.json()
    r = client.get("/api/v1/jobs/bad id!")
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "path.job_id"
    r = client.get("/api/v1/jobs", params={"limit": 0})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "query.limit"


def test_request_bodies_are_size_limited(db_path: Path) -> None:
    with TestClient(create_app(settings_for(db_path, max_body_bytes=4096))) as c:
        r = c.post("/api/v1/data/config", content=b'{"users": 10' + b" " * 5000 + b"}",
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["status"] == 413


def test_no_cors_headers_by_default(client: TestClient) -> None:
    r = client.get("/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    r = client.options("/health", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers


# ------------------------------------------------------------------------------------- security


@pytest.fixture
def token_client(db_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(db_path, admin_token=TOKEN), stop_server=lambda: None)) as c:
        yield started(c)


MUTATING = [
    ("POST", "/api/v1/operations/ingestion/stop"),
    ("POST", "/api/v1/operations/incremental/start"),
    ("POST", "/api/v1/operations/rules/refresh"),
    ("POST", "/api/v1/operations/explainer/clear"),
    ("POST", "/api/v1/operations/fusion/train"),
    ("POST", "/api/v1/operations/training/hgt"),
    ("POST", "/api/v1/graph/refresh"),
    ("POST", "/api/v1/rules"),
    ("PUT", "/api/v1/rules/r1"),
    ("DELETE", "/api/v1/rules/r1"),
    ("POST", "/api/v1/rules/preview"),
    ("POST", "/api/v1/data/config"),
    ("POST", "/api/v1/data/regenerate"),
    ("POST", "/api/v1/operations/shutdown"),
]


@pytest.mark.parametrize("method, path", MUTATING)
def test_mutating_endpoints_need_the_token(token_client: TestClient, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        r = token_client.request(method, path, json={}, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"] == "unauthorized" and r.headers["www-authenticate"].startswith("Bearer")


def test_the_right_token_passes_and_reads_need_none(token_client: TestClient) -> None:
    assert token_client.get("/health").status_code == 200
    assert token_client.get("/api/v1/operations/status").status_code == 200
    r = token_client.post("/api/v1/operations/ingestion/stop", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["command"] == "ingestion.stop"
    r = token_client.post("/api/v1/data/config", json={"users": 1}, headers={"Authorization": f"bearer {TOKEN}"})
    assert r.status_code == 422  # authorised, then validated


def test_refuses_to_listen_beyond_loopback_without_a_token(db_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.com")
    with pytest.raises(ValueError, match="UPS_ADMIN_TOKEN"):
        check_bind("0.0.0.0", settings_for(db_path))
    check_bind("0.0.0.0", settings_for(db_path, admin_token=TOKEN))
    check_bind("127.0.0.1", settings_for(db_path))


def test_ups_api_refuses_a_public_address_without_a_token(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ups.cli import main

    assert main(["api", "--db", str(db_path), "--host", "0.0.0.0"]) == 2
    assert "UPS_ADMIN_TOKEN" in capsys.readouterr().err


def test_stream_sends_job_progress(db_path: Path) -> None:
    with TestClient(create_app(settings_for(db_path, sse_interval=0.1))) as client:
        _job_progress_seen(started(client), db_path)


def _job_progress_seen(client: TestClient, db_path: Path) -> None:
    conn = connect(db_path)
    jobs = Jobs(conn)
    job_id = jobs.create("fusion.train", {})
    jobs.update(job_id, state="running", started_at=time.time(), progress=0.1, message="epoch 1")
    result: dict[str, Any] = {}
    reader = threading.Thread(
        target=lambda: result.update(r=client.get("/api/v1/operations/stream", params={"timeout": 4}))
    )
    reader.start()
    for i in range(2, 6):
        time.sleep(0.6)  # slower than the stream polls: every step is seen
        jobs.update(job_id, progress=i / 10, message=f"epoch {i}")
    time.sleep(0.6)
    jobs.update(job_id, state="succeeded", progress=1.0, finished_at=time.time(), result={"auc": 0.8})
    reader.join(timeout=10)
    conn.close()
    seen = [json.loads(d) for e, d in sse_events(result["r"].text) if e == "job"]
    assert [j["progress"] for j in seen] == [0.1, 0.2, 0.3, 0.4, 0.5, 1.0]
    assert seen[-1]["state"] == "succeeded" and seen[-1]["result"] == {"auc": 0.8}


def test_openapi_schema_and_ui_are_served(client: TestClient) -> None:
    schema = client.get("/schema/openapi.json").json()
    assert schema["info"]["title"] == "UPS API"
    paths = set(schema["paths"])
    assert {"/health", "/api/v1/user/{user_id}", "/api/v1/graph/refresh", "/api/v1/operations/stream",
            "/api/v1/data/regenerate", "/metrics"} <= paths
    refresh = schema["paths"]["/api/v1/graph/refresh"]["post"]
    assert {"202", "401", "409", "422"} <= set(refresh["responses"])
    ui = client.get("/schema/swagger")
    assert ui.status_code == 200 and "swagger" in ui.text.lower()
    # every file the page loads comes from this server (no CDN): relative URLs that answer
    loaded = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', ui.text)
    assert loaded and all(u.startswith("/") and not u.startswith("//") for u in loaded), loaded
    for url in loaded:
        assert client.get(url).status_code == 200, url
