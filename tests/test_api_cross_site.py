"""A web page of another site cannot drive or read a local install: Host names, Origins and media types."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from litestar.testing import TestClient
from pydantic import ValidationError

from api.app import create_app
from api_support import TEST_CLIENT_HOST, settings_for, started
from config.settings import Settings

RULE = {"name": "cross_site", "description": "", "weight": 0.1, "condition": "monthly_fee > 1"}
OWN = f"http://{TEST_CLIENT_HOST}"


@pytest.fixture
def client(db_path: Path) -> Iterator[TestClient]:
    app = create_app(settings_for(db_path, allowed_origins=["https://dash.example.org"]))
    with TestClient(app) as c:
        started(c)
        yield c


@pytest.mark.parametrize("host", ["evil.example", "evil.example:5000", "127.0.0.1.evil.example", "localhost.:80", ""])
def test_unknown_host_names_are_not_served(client: TestClient, host: str) -> None:
    """DNS rebinding: the attacker's name resolves to 127.0.0.1, but the browser sends that name as Host."""
    for path in ("/health", "/api/v1/rules", "/console/overview"):
        r = client.get(path, headers={"Host": host})
        assert r.status_code == 400 and r.json()["error"] == "bad_host", (path, r.text)
        assert "UPS_ALLOWED_HOSTS" in r.json()["message"]


@pytest.mark.parametrize("host", ["127.0.0.1:5000", "localhost", "LOCALHOST:8080", "[::1]:5000", "::1"])
def test_loopback_names_are_served_on_any_port(client: TestClient, host: str) -> None:
    assert client.get("/health", headers={"Host": host}).status_code == 200


def test_configured_host_names_are_served(db_path: Path) -> None:
    with TestClient(create_app(settings_for(db_path, allowed_hosts=["ups.lan"]))) as c:
        assert c.get("/health", headers={"Host": "ups.lan:5000"}).status_code == 200
        assert c.get("/health", headers={"Host": "localhost"}).status_code == 400  # the list replaces the default


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/rules", RULE),
        ("POST", "/api/v1/rules/preview", {"condition": "monthly_fee > 1"}),
        ("PUT", "/api/v1/rules/high_value_user", {"weight": 0.5}),
        ("DELETE", "/api/v1/rules/high_value_user", None),
        ("POST", "/api/v1/operations/shutdown", None),
        ("POST", "/api/v1/operations/explainer/clear", None),
    ],
)
@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:5000", f"{OWN}:8080"])
def test_changes_from_other_origins_are_refused(client: TestClient, method: str, path: str, body: object,
                                                origin: str) -> None:
    r = client.request(method, path, json=body, headers={"Origin": origin})
    assert r.status_code == 403 and r.json()["error"] == "forbidden_origin", r.text
    assert client.get("/api/v1/rules").json()["version"] > 0 and client.get("/health").status_code == 200


def test_changes_from_the_own_origin_an_allowed_one_or_no_browser_pass(client: TestClient) -> None:
    assert client.post("/api/v1/rules", json=RULE, headers={"Origin": OWN}).status_code == 201
    r = client.put("/api/v1/rules/cross_site", json={"weight": 0.2}, headers={"Origin": "https://dash.example.org"})
    assert r.status_code == 200, r.text
    assert client.delete("/api/v1/rules/cross_site").status_code == 200  # curl and the CLI send no Origin
    assert client.post("/api/v1/operations/explainer/clear").status_code == 200  # no body: no media type


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     None],
)
def test_changes_must_be_sent_as_json(client: TestClient, content_type: str | None) -> None:
    """The bodies a page may post cross-site without a preflight (and a body with no type at all): 415."""
    import json

    headers = {"Content-Type": content_type} if content_type else {}
    for path in ("/api/v1/rules", "/api/v1/rules/preview", "/api/v1/data/config"):
        r = client.post(path, content=json.dumps(RULE).encode(), headers=headers)
        assert r.status_code == 415 and "application/json" in r.json()["message"], (path, r.text)
    assert [r["name"] for r in client.get("/api/v1/rules").json()["rules"]].count("cross_site") == 0
    ok = client.post("/api/v1/rules", content=json.dumps(RULE).encode(),
                     headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize("token", ["short", "x" * 15, " " * 20, "\t\n" * 9])
def test_weak_admin_tokens_are_refused_at_start(token: str) -> None:
    with pytest.raises(ValidationError, match="UPS_ADMIN_TOKEN"):
        Settings(admin_token=token)


def test_token_check_says_whether_a_token_is_the_right_one(db_path: Path) -> None:
    token = "a-long-enough-token-42"
    with TestClient(create_app(settings_for(db_path, admin_token=token))) as c:
        started(c)
        assert c.get("/api/v1/auth/check").json() == {"token_required": True, "token_accepted": None}
        wrong = c.get("/api/v1/auth/check", headers={"Authorization": "Bearer nope-nope-nope-nope"}).json()
        assert wrong["token_accepted"] is False
        right = c.get("/api/v1/auth/check", headers={"Authorization": f"Bearer {token}"}).json()
        assert right["token_accepted"] is True
    assert Settings(admin_token="").admin_token is None


def test_ups_api_with_a_short_token_stops_with_a_clear_message(db_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "UPS_ADMIN_TOKEN": "changeme"}
    r = subprocess.run([sys.executable, "-m", "ups", "api", "--db", str(db_path), "--port", "1"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "UPS_ADMIN_TOKEN has 8 characters; use at least 16" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
