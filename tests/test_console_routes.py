"""The console's HTTP side, without a browser: pages and static files served by the API app itself,
every referenced file present, nothing referenced from outside the server, a CSP that forbids it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api_support import settings_for
from api.console import PAGES, STATIC, TEMPLATES
from storage.db import connect
from storage.projections import Profiles

SRC = re.compile(r'(?:src|href)="([^"]+)"')
IMPORT = re.compile(r'(?:from|import\()\s*"(\./[^"]+)"')
# XML namespace names are identifiers, not downloads
EXTERNAL = re.compile(r"(?:https?:)?//(?!www\.w3\.org/2000/svg)[a-z0-9.-]+\.[a-z]{2,}", re.I)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ups.db"


@pytest.fixture
def client(db: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(db, explain_workers=2))) as c:
        yield c


def test_console_root_redirects_to_the_overview(client: TestClient) -> None:
    r = client.get("/console", follow_redirects=False)
    assert r.status_code in (301, 302, 307) and r.headers["location"] == "/console/overview"


@pytest.mark.parametrize("page", [p.key for p in PAGES])
def test_each_page_and_everything_it_references_is_served(client: TestClient, page: str) -> None:
    r = client.get(f"/console/{page}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "charset=utf-8" in r.headers["content-type"]
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    html = r.text
    for p in PAGES:  # navigation to every page
        assert f'href="/console/{p.key}"' in html
    refs = [u for u in SRC.findall(html) if u.startswith("/console/static/")]
    assert any(u.endswith(f"/{page}.js") for u in refs)
    seen: set[str] = set()
    while refs:  # the page's files and the modules they import
        url = refs.pop()
        if url in seen:
            continue
        seen.add(url)
        got = client.get(url)
        assert got.status_code == 200, url
        if url.endswith(".js"):
            assert "javascript" in got.headers["content-type"]
            refs += [f"/console/static/{m[2:]}" for m in IMPORT.findall(got.text)]
        elif url.endswith(".css"):
            assert got.headers["content-type"].startswith("text/css")
    assert {"/console/static/console.js", "/console/static/charts.js", "/console/static/console.css"} <= seen


def test_unknown_page_is_a_json_404_naming_the_pages(client: TestClient) -> None:
    r = client.get("/console/nope")
    assert r.status_code == 404
    assert "overview" in r.json()["message"] and "nope" in r.json()["message"]


def test_nothing_is_loaded_from_outside_the_server() -> None:
    files = [*TEMPLATES.glob("*.html"), *STATIC.glob("*")]
    assert len(files) >= 10
    for f in files:
        hits = EXTERNAL.findall(f.read_text(encoding="utf-8"))
        assert hits == [], f"{f.name} refers to {hits}"


def test_console_is_not_part_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/console")]
    assert "/api/v1/rules" in paths


def test_random_user_comes_from_the_profiles(client: TestClient, db: Path) -> None:
    r = client.get("/console/random-user")
    assert r.status_code == 404 and "no users yet" in r.json()["message"]
    conn = connect(db)
    with conn:
        Profiles(conn).upsert_many([(f"U{i:07d}", {"user_id": f"U{i:07d}"}, i) for i in range(5)])
    conn.close()
    picked = {client.get("/console/random-user").json()["user_id"] for _ in range(40)}
    assert picked <= {f"U{i:07d}" for i in range(5)} and len(picked) > 1
