"""Process metrics (CPU share, memory) of /api/v1/operations/metrics and of the stream's metrics events:
measured between readings on the same process, and never an error when a process goes away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.resources import ProcessMeter
from api_support import put_flow_status, settings_for, sse_events, started

BUSY = [sys.executable, "-c", "while True: pass"]
IDLE = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def client(db_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(db_path, process_sample_interval=0.05, sse_metrics_interval=0.3))) as c:
        yield started(c)


@pytest.fixture
def child() -> Iterator[Any]:
    """Start child processes of this (the API's) process; each is killed and reaped at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str]) -> subprocess.Popen[bytes]:
        procs.append(subprocess.Popen(argv))
        return procs[-1]

    yield start
    for p in procs:
        p.kill()
        p.wait(timeout=10)


def burn(cpu_seconds: float) -> None:
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        sum(range(1000))


def test_api_cpu_share_is_measured_between_readings(client: TestClient) -> None:
    # the clock starts before the first call: its reading, where the measured window begins, is taken
    # inside it (starting after it undercounts the window by the rest of that call, seen on a loaded machine)
    t0 = time.monotonic()
    first = client.get("/api/v1/operations/metrics").json()
    # even the first call has figures (measured over a short first window), not blanks
    assert first["processes"]["api"]["cpu_percent"] >= 0 and first["system"]["cpu_percent"] >= 0
    burn(0.4)  # in the API's process: the test client runs the app here
    time.sleep(0.1)
    api = client.get("/api/v1/operations/metrics").json()["processes"]["api"]
    wall = time.monotonic() - t0
    assert api["pid"] == os.getpid()
    # at least the CPU time burnt over at most the wall time between the readings
    assert api["cpu_percent"] >= 0.9 * 100 * 0.4 / wall > 0, (api, wall)


def test_dataflow_cpu_share_under_a_busy_loop(client: TestClient, db_path: Path, child: Any) -> None:
    flow = child(BUSY)
    put_flow_status(db_path, pid=flow.pid)
    client.get("/api/v1/operations/metrics")
    time.sleep(0.5)
    df = client.get("/api/v1/operations/metrics").json()["processes"]["dataflow"]
    assert df["pid"] == flow.pid and df["rss_bytes"] > 1_000_000
    assert df["cpu_percent"] > 10, df  # a core spinning, even on a loaded machine


def test_the_first_call_already_shows_a_busy_dataflow(client: TestClient, db_path: Path, child: Any) -> None:
    flow = child(BUSY)
    put_flow_status(db_path, pid=flow.pid)
    df = client.get("/api/v1/operations/metrics").json()["processes"]["dataflow"]
    assert df["pid"] == flow.pid and df["cpu_percent"] > 0, df  # a figure, not null (how much: the load decides)


def test_a_vanished_process_is_left_out_not_an_error(client: TestClient, db_path: Path, child: Any) -> None:
    worker, flow = child(IDLE), child(IDLE)
    put_flow_status(db_path, pid=flow.pid)
    body = client.get("/api/v1/operations/metrics").json()
    assert worker.pid in {w["pid"] for w in body["workers"]} and body["processes"]["dataflow"]["pid"] == flow.pid
    # both die without being reaped: zombies, still listed as children, still "alive" to kill(pid, 0)
    worker.kill()
    flow.kill()
    _wait_zombie(worker)
    _wait_zombie(flow)
    r = client.get("/api/v1/operations/metrics")
    assert r.status_code == 200, r.text
    assert worker.pid not in {w["pid"] for w in r.json()["workers"]} and "dataflow" not in r.json()["processes"]
    # and reaped: the pids are gone altogether
    worker.wait()
    flow.wait()
    r = client.get("/api/v1/operations/metrics")
    assert r.status_code == 200 and "dataflow" not in r.json()["processes"]


def test_children_coming_and_going_never_give_an_error(client: TestClient) -> None:
    """Children that end between being listed and being read (the intermittent 500 once seen)."""
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            subprocess.run(["true"], check=True)

    spawner = threading.Thread(target=churn)
    spawner.start()
    try:
        statuses = [client.get("/api/v1/operations/metrics").status_code for _ in range(150)]
    finally:
        stop.set()
        spawner.join(timeout=10)
    assert set(statuses) == {200}


def test_meter_forgets_a_pid_that_is_gone(child: Any) -> None:
    meter = ProcessMeter(min_interval=0.0)
    p = child(IDLE)
    assert meter.figures(p.pid)["cpu_percent"] >= 0  # a figure already on the first reading
    deadline = time.monotonic() + 30
    while meter.figures(p.pid)["cpu_percent"] != 0.0:  # asleep once its interpreter has started
        assert time.monotonic() < deadline
        time.sleep(0.1)
    p.kill()
    p.wait()
    assert meter.figures(p.pid) is None
    assert meter.figures(2**22 + 12345) is None  # never existed (above the kernel's pid_max)


def _wait_zombie(p: subprocess.Popen[bytes]) -> None:
    """Until ``p`` has exited and is not reaped yet (a zombie: still a child, still "alive" to kill(pid, 0))."""
    deadline = time.monotonic() + 10
    while open(f"/proc/{p.pid}/stat").read().split(")")[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_process_that_died_within_the_window_is_left_out(child: Any) -> None:
    """The reading shared within a window is not handed out for a process that has died since (a metrics
    call right after a worker died listed it still)."""
    meter = ProcessMeter(min_interval=60.0)
    p = child(IDLE)
    assert meter.figures(p.pid) is not None
    p.kill()
    _wait_zombie(p)
    assert meter.figures(p.pid) is None
    assert p.pid not in {w["pid"] for w in meter.children(os.getpid())}


def test_readers_within_the_window_share_one_reading(db_path: Path) -> None:
    meter = ProcessMeter(min_interval=60.0)
    first = meter.figures(os.getpid())
    burn(0.2)
    assert meter.figures(os.getpid()) is first  # a second reader does not shrink the window


def test_stream_sends_metrics_events(client: TestClient, db_path: Path, child: Any) -> None:
    flow = child(BUSY)
    put_flow_status(db_path, pid=flow.pid)
    result: dict[str, Any] = {}
    reader = threading.Thread(
        target=lambda: result.update(r=client.get("/api/v1/operations/stream", params={"timeout": 1.6}))
    )
    reader.start()
    reader.join(timeout=30)
    r = result["r"]
    assert r.status_code == 200
    metrics = [json.loads(d) for e, d in sse_events(r.text) if e == "metrics"]
    assert len(metrics) >= 3, [e for e, _ in sse_events(r.text)]  # at once, then every 0.3 s
    assert [m["ts"] for m in metrics] == sorted(m["ts"] for m in metrics)
    last = metrics[-1]["processes"]
    assert last["api"]["pid"] == os.getpid() and last["api"]["rss_bytes"] > 10_000_000
    assert last["dataflow"]["pid"] == flow.pid and last["dataflow"]["cpu_percent"] > 10
    assert metrics[-1]["gpu"] is None  # no CUDA here


def test_dataflow_gpu_memory_as_its_refresh_step_reports_it(client: TestClient, db_path: Path) -> None:
    put_flow_status(db_path, device="cuda:0", gpu_allocated_bytes=123_456_789, gpu_reserved_bytes=200_000_000)
    gpu = client.get("/api/v1/operations/metrics").json()["gpu"]
    assert gpu == {"dataflow": {"device": "cuda:0", "allocated_bytes": 123_456_789, "reserved_bytes": 200_000_000}}


def test_gpu_reading_while_torch_is_still_being_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explanation's first model load imports torch on a thread; meanwhile sys.modules holds a
    partly initialised module without ``cuda`` (seen as a 500 in the middle of the console's stream)."""
    import types

    from api.resources import gpu

    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    assert gpu(None) is None
    assert gpu({"device": "cuda:0", "gpu_allocated_bytes": 5})["dataflow"]["allocated_bytes"] == 5


def test_a_failed_metrics_reading_does_not_end_the_stream(client: TestClient, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import api.sse
    from api.resources import operations_metrics

    calls = {"n": 0}

    def flaky(ctx: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise AttributeError("partially initialized module 'torch' has no attribute 'cuda'")
        return operations_metrics(ctx)

    monkeypatch.setattr(api.sse, "operations_metrics", flaky)
    put_flow_status(db_path)
    r = client.get("/api/v1/operations/stream", params={"timeout": 1.0})
    assert r.status_code == 200
    kinds = [e for e, _ in sse_events(r.text)]
    assert calls["n"] >= 2 and "status" in kinds and "metrics" in kinds  # went on after the failure
