"""A real ``ups api`` process while it starts: requests that need the scoring service or the explainer
are answered at once with 503 and Retry-After while they load (torch, models, explanation workers), never
held for seconds; then the same requests are served."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from api_support import SYSTEM, folded_store, needs
from console_harness import ups_api
from storage.db import connect
from storage.projections import Profiles

needs(*SYSTEM)

pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, json.loads(err.read())


def loading(base: str) -> bool:
    return get(f"{base}/health")[2]["api"]["scoring"] == "loading"


def test_requests_while_the_api_loads_get_503_with_retry_after(tmp_path: Path, small_gen: Any) -> None:
    db = folded_store(tmp_path / "ups.db", small_gen)
    conn = connect(db)
    user = Profiles(conn).ids(limit=1)[0]
    conn.close()
    # two explanation workers (each imports torch and loads the models) make the loading last seconds here
    srv = ups_api(db, UPS_EXPLAIN_WORKERS="2").start(timeout=180, until_ready=False)
    try:
        base = srv.url
        refused: list[tuple[str, int, dict[str, str], Any]] = []
        while loading(base):
            for path in (f"/api/v1/user/{user}", f"/api/v1/explain/{user}", f"/api/v1/recommendation/{user}"):
                status, headers, body = get(base + path)
                if loading(base):  # still loading after the answer came: it must have been refused
                    refused.append((path, status, headers, body))
        assert refused, "the API was ready before a request could be sent while it loaded"
        for path, status, headers, body in refused:
            assert status == 503 and body["error"] == "unavailable", (path, status, body)
            assert int(headers["retry-after"]) > 0 and "loading" in body["message"], (path, headers, body)
        # once ready, the same requests are served
        assert get(f"{base}/health")[2]["api"]["scoring"] == "ready"
        status, _, doc = get(f"{base}/api/v1/user/{user}")
        assert status == 200 and doc["user_id"] == user
        status, _, doc = get(f"{base}/api/v1/explain/{user}")
        assert status == 200 and doc["contributions"]
    finally:
        srv.stop()
