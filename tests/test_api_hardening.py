"""Hostile and careless use of a real ``ups api`` process: rule conditions that would freeze it, cross-site
requests, slow clients, an unwritable store. Each test tries several members of its class."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from typing import Iterator

import pytest

from api_support import folded_store
from console_harness import Server, http
from hardening_support import HealthProbe, ups_api
from test_sandbox import HOSTILE

#: a real server and real sockets, a minute or two in all (the in-process tests cover the same classes quickly)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, small_gen) -> Iterator[Server]:
    db = folded_store(tmp_path_factory.mktemp("hardening") / "ups.db", small_gen)
    server = ups_api(db).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(300)
def test_hostile_rule_conditions_never_freeze_the_api(api: Server) -> None:
    """Preview, create, score and delete each hostile condition while /health is probed: every rule request
    answers (refused with the reason, or evaluated with the bound reported per user) and /health never
    goes unanswered. Plain Python would spend minutes to hours in one C call on each of these."""
    url = api.url
    idle = HealthProbe(url)
    with contextlib.contextmanager(idle.running)():
        time.sleep(3)
    probe = HealthProbe(url)
    user = http("GET", f"{url}/console/random-user")[1]
    user_id = user["user_id"] if isinstance(user, dict) else None
    with contextlib.contextmanager(probe.running)():
        for i, condition in enumerate(HOSTILE):
            status, body = http("POST", f"{url}/api/v1/rules/preview", {"condition": condition, "sample": 300})
            if status == 422:
                assert "limit" in body["message"], body
                continue
            # small enough for these profiles (e.g. few call partners), or stopped per user by the bound
            assert status == 200 and body["sample"] == 300, body
            assert all("EvaluationLimit" in e["error"] for e in body["error_examples"]), body
            name = f"hostile_{i}"
            status, body = http("POST", f"{url}/api/v1/rules",
                                {"name": name, "description": "", "weight": 1.0, "condition": condition})
            if status == 422:  # over the bounds on the users it was tried on when saved
                assert "limit" in body["message"], body
                continue
            assert status == 201, body
            if user_id:
                status, body = http("GET", f"{url}/api/v1/user/{user_id}")
                assert status == 200, body
                detail = next(d for d in body["score"]["rules"] if d["name"] == name)
                assert detail["error"] is None or "limit" in detail["error"], detail
            assert http("DELETE", f"{url}/api/v1/rules/{name}")[0] == 200
    assert probe.latencies and None not in probe.latencies, f"/health went unanswered: {probe.latencies}"
    print(f"/health idle: p50 {idle.quantile(0.5) * 1000:.1f} ms, p99 {idle.quantile(0.99) * 1000:.1f} ms; "
          f"during hostile rule requests ({len(probe.latencies)} probes): "
          f"p50 {probe.quantile(0.5) * 1000:.1f} ms, p99 {probe.quantile(0.99) * 1000:.1f} ms")


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_rebound_host_names_get_nothing_from_the_real_server(api: Server) -> None:
    for host in (b"attacker.example", b"attacker.example:%d" % api.port, b"localhost.attacker.example"):
        answer = _raw(api.port, b"GET /api/v1/rules HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400") and b"bad_host" in answer and b"high_value_user" not in answer
    answer = _raw(api.port, b"GET /api/v1/rules HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and b"high_value_user" in answer


@pytest.mark.timeout(180)
def test_half_open_and_slow_clients_are_closed_within_seconds(api: Server) -> None:
    """Hundreds of connections that send nothing, half a request head, or a header byte now and then are all
    closed by the server (UPS_HTTP_HEAD_TIMEOUT, 5 s by default), and /health answers meanwhile."""
    socks: list[socket.socket] = []
    try:
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", api.port), timeout=30)
            if i % 3 == 1:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")  # never ends its head
            elif i % 3 == 2:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
            socks.append(s)
        assert http("GET", f"{api.url}/health", timeout=30)[0] == 200
        dribbler = socks[1]
        deadline = time.monotonic() + 60
        open_ = list(socks)
        while open_ and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                dribbler.send(b"X")  # a header byte now and then does not keep a head open for ever
            readable, _, _ = select.select(open_, [], [], 0.5)
            for s in readable:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    open_.remove(s)  # closed by the server
        assert not open_, f"{len(open_)} of {len(socks)} connections still open after 60 s"
    finally:
        for s in socks:
            s.close()
    assert http("GET", f"{api.url}/health")[0] == 200


def test_a_request_head_that_keeps_growing_is_refused(api: Server) -> None:
    """Headers sent without end pile up until the head deadline unless bounded: past 64 KiB the server
    answers 400 and closes, while an ordinary head of a few KiB is served."""
    big = b"GET /health HTTP/1.1\r\nHost: localhost\r\n" + b"".join(
        b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(200)) + b"Connection: close\r\n\r\n"
    try:
        answer = _raw(api.port, big)
    except (ConnectionResetError, BrokenPipeError):
        answer = b"reset"  # the server answered 400 and closed while the rest was still being sent
    assert answer == b"reset" or (answer.startswith(b"HTTP/1.1 400") and b"request head larger" in answer), answer[:200]
    small = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Filler: " + b"a" * 4000 + b"\r\nConnection: close\r\n\r\n"
    assert _raw(api.port, small).startswith(b"HTTP/1.1 200")
