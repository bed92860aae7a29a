"""A store that cannot be written (read-only file, full disk) gets 503 naming the cause, and the API works
again on the next request once it can be written, even an API started while it could not."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api_support import folded_store, settings_for, started
from console_harness import http
from hardening_support import ups_api
from scoring.rule_store import RuleStore

RULE = {"name": "after_ro", "description": "", "weight": 0.1, "condition": "monthly_fee > 1"}


def _chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)


@pytest.fixture
def immutable(tmp_path: Path, small_gen: Any) -> Iterator[Path]:
    """A folded store whose file even root cannot write (``chattr +i``; chmod does not stop root)."""
    db = folded_store(tmp_path / "ups.db", small_gen)
    try:
        _chattr("+i", db)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"chattr +i is not available here: {err}")
    try:
        yield db
    finally:
        _chattr("-i", db)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_api_started_on_a_read_only_store_answers_503_then_recovers(immutable: Path) -> None:
    server = ups_api(immutable).start()
    try:
        url = server.url
        assert http("GET", f"{url}/health")[0] == 200  # reading works
        for method, path, body in [("POST", "/api/v1/rules", RULE), ("POST", "/api/v1/operations/explainer/clear", None)]:
            status, answer = http(method, f"{url}{path}", body)
            assert status == 503 and "cannot be written" in answer["message"], answer
            assert "readonly" in answer["message"] and str(immutable) in answer["message"]
        _chattr("-i", immutable)
        status, answer = http("POST", f"{url}/api/v1/rules", RULE)  # the very next request
        assert status == 201, answer
        assert http("POST", f"{url}/api/v1/operations/explainer/clear")[0] == 200
        assert "after_ro" in [r["name"] for r in http("GET", f"{url}/api/v1/rules")[1]["rules"]]
    finally:
        server.stop()
        _chattr("+i", immutable)  # for the fixture's -i


@pytest.mark.parametrize(
    ("message", "code"),
    [("database or disk is full", "SQLITE_FULL"), ("attempt to write a readonly database", "SQLITE_READONLY"),
     ("disk I/O error", "SQLITE_IOERR_WRITE")],
)
def test_a_store_that_fails_to_write_is_a_503_and_the_next_request_works(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, message: str, code: str
) -> None:
    real = RuleStore._append
    failures: list[int] = []

    def append_once(self: RuleStore, *args: Any) -> int:
        if failures:
            failures.pop()
            err = sqlite3.OperationalError(message)
            err.sqlite_errorname = code  # type: ignore[attr-defined]
            raise err
        return real(self, *args)

    monkeypatch.setattr(RuleStore, "_append", append_once)
    with TestClient(create_app(settings_for(db_path))) as c:
        started(c)
        c.get("/api/v1/rules")  # the service built, the default rules in place
        failures.append(1)
        r = c.post("/api/v1/rules", json=RULE)
        assert r.status_code == 503 and message in r.json()["message"], r.text
        assert "after_ro" not in [x["name"] for x in c.get("/api/v1/rules").json()["rules"]]  # nothing half-written
        assert c.post("/api/v1/rules", json=RULE).status_code == 201


def test_other_database_errors_stay_internal_errors(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: RuleStore, *args: Any) -> int:
        raise sqlite3.OperationalError("no such table: rules")

    monkeypatch.setattr(RuleStore, "_append", broken)
    with TestClient(create_app(settings_for(db_path))) as c:
        started(c)
        c.get("/api/v1/rules")
        r = c.post("/api/v1/rules", json=RULE)
        assert r.status_code == 500 and "no such table" not in r.text
