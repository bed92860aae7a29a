"""Users, explanations, recommendations and rules through Litestar's test client, on a small store whose
profiles were folded by the dataflow's replay (no model trained: the fusion layer starts untrained)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import numpy as np
import pytest
from litestar.testing import TestClient

from api.app import create_app
from api_support import folded_store, needs, settings_for, started
from storage.event_store import EventStore
from storage.projections import Profiles


needs("scoring.service")

@pytest.fixture(scope="module")
def folded_db(tmp_path_factory: pytest.TempPathFactory, small_gen) -> Path:
    return folded_store(tmp_path_factory.mktemp("scoring") / "ups.db", small_gen)


@pytest.fixture
def db(folded_db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ups.db"
    shutil.copy(folded_db, copy)
    return copy


@pytest.fixture
def client(db: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(db))) as c:
        yield started(c)


@pytest.fixture
def user(db: Path) -> str:
    with EventStore(db) as store:
        return Profiles(store.conn).ids(limit=1)[0]


def test_user_profile_and_fused_score(client: TestClient, user: str) -> None:
    body = client.get(f"/api/v1/user/{user}").json()
    assert body["user_id"] == user
    assert {"monthly_fee", "tenure_months", "plan_type", "event_counts"} <= set(body["profile"])
    score = body["score"]
    assert 0 <= score["score"] <= 1 and 0 <= score["gate"] <= 1
    assert {r["name"] for r in score["rules"]} >= {"high_value_user", "loyal_user"}


def test_unknown_and_malformed_users(client: TestClient) -> None:
    for path in ("/api/v1/user/nobody", "/api/v1/recommendation/nobody", "/api/v1/explain/nobody"):
        r = client.get(path)
        assert r.status_code == 404 and "nobody" in r.json()["message"], path
    r = client.get("/api/v1/user/" + "x" * 65)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "path.user_id"
    r = client.get("/api/v1/explain/a;b")
    assert r.status_code == 422


def test_recommendations(client: TestClient, user: str) -> None:
    body = client.get(f"/api/v1/recommendation/{user}").json()
    assert body["user_id"] == user
    for rec in body["recommendations"]:
        assert set(rec) >= {"strategy", "title", "reason", "priority"}


def test_explanation_is_cached_and_cleared(client: TestClient, user: str) -> None:
    first = client.get(f"/api/v1/explain/{user}", params={"top_k": 3}).json()
    assert first["cached"] is False and first["contributions"]
    assert len(first["top_positive"]) <= 3 and len(first["top_negative"]) <= 3
    assert client.get(f"/api/v1/explain/{user}", params={"top_k": 3}).json()["cached"] is True
    r = client.post("/api/v1/operations/explainer/clear")
    assert r.status_code == 200 and r.json()["command"] == "explainer.clear"
    assert client.get(f"/api/v1/explain/{user}", params={"top_k": 3}).json()["cached"] is False
    grouped = client.get(f"/api/v1/explain/{user}", params={"mode": "grouped"}).json()
    assert grouped["mode"] == "grouped"


@pytest.mark.parametrize("params, field", [({"top_k": 0}, "query.top_k"), ({"mode": "all"}, "query.mode")])
def test_explain_parameters_are_validated(client: TestClient, user: str, params: dict, field: str) -> None:
    r = client.get(f"/api/v1/explain/{user}", params=params)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == field


def test_rules_crud(client: TestClient) -> None:
    before = client.get("/api/v1/rules").json()
    assert "high_value_user" in {r["name"] for r in before["rules"]}
    rule = {"name": "heavy_caller", "description": "many calls", "weight": 0.5, "condition": "total_events > 10"}
    r = client.post("/api/v1/rules", json=rule)
    assert r.status_code == 201 and r.json()["name"] == "heavy_caller"
    listed = client.get("/api/v1/rules").json()
    assert listed["version"] > before["version"] and "heavy_caller" in {x["name"] for x in listed["rules"]}
    assert client.post("/api/v1/rules", json=rule).status_code == 409
    r = client.put("/api/v1/rules/heavy_caller", json={"weight": -0.25})
    assert r.status_code == 200 and r.json()["weight"] == -0.25 and r.json()["condition"] == "total_events > 10"
    r = client.delete("/api/v1/rules/heavy_caller")
    assert r.status_code == 200 and r.json()["deleted"] == "heavy_caller"
    assert client.delete("/api/v1/rules/heavy_caller").status_code == 404
    assert client.put("/api/v1/rules/heavy_caller", json={"weight": 1}).status_code == 404


@pytest.mark.parametrize(
    "rule, field",
    [
        ({"name": "x", "weight": 1, "condition": "__import__('os').system('true')"}, "body.condition"),
        ({"name": "x", "weight": 1, "condition": "monthly_fee >"}, "body.condition"),
        ({"name": "x", "weight": 1, "condition": "(lambda: 1)()"}, "body.condition"),
        ({"name": "bad name!", "weight": 1, "condition": "True"}, "body.name"),
        ({"name": "x", "weight": 1e9, "condition": "True"}, "body.weight"),
        ({"name": "x", "weight": "1", "condition": "True"}, "body.weight"),
        ({"name": "x", "condition": "True"}, "body.weight"),
        ({"name": "x", "weight": 1, "condition": "True", "owner": "me"}, "body.owner"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(client: TestClient, rule: dict, field: str) -> None:
    r = client.post("/api/v1/rules", json=rule)
    assert r.status_code == 422, r.text
    assert r.json()["details"][0]["field"] == field and r.json()["message"]
    assert "x" not in {x["name"] for x in client.get("/api/v1/rules").json()["rules"]}


def test_a_rule_error_gives_the_column_in_the_users_text(client: TestClient) -> None:
    r = client.post("/api/v1/rules/preview", json={"condition": "  monthly_fee > 1 and x.y"})
    assert r.status_code == 422 and r.json()["details"][0]["problem"].endswith("(at column 23)"), r.json()


def test_rule_update_needs_something_to_change(client: TestClient) -> None:
    r = client.put("/api/v1/rules/high_value_user", json={})
    assert r.status_code == 422
    r = client.put("/api/v1/rules/high_value_user", json={"condition": None})
    assert r.status_code == 422 and "condition cannot be null" in r.json()["message"]


def test_a_new_rule_changes_the_score_and_the_explanation(client: TestClient, user: str) -> None:
    before = client.get(f"/api/v1/explain/{user}").json()
    r = client.post("/api/v1/rules", json={"name": "everyone", "weight": 3.0, "condition": "monthly_fee >= 0"})
    assert r.status_code == 201
    after = client.get(f"/api/v1/explain/{user}").json()
    assert after["cached"] is False
    assert after["f_rule"] != before["f_rule"]
    assert {d["name"]: d["fired"] for d in after["rules"]}["everyone"] is True
    assert client.get(f"/api/v1/user/{user}").json()["score"]["rules_version"] > before["rules_version"]


def test_preview_and_refresh(client: TestClient) -> None:
    r = client.post("/api/v1/rules/preview", json={"condition": "monthly_fee >= 0", "sample": 50})
    assert r.status_code == 200 and r.json()["fired"] == r.json()["sample"] == 50
    r = client.post("/api/v1/rules/preview", json={"condition": "open('/etc/passwd')"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "body.condition"
    r = client.post("/api/v1/operations/rules/refresh")
    assert r.status_code == 200 and "rules reloaded" in r.json()["effect"]
    assert client.get("/api/v1/operations/status").json()["history"][0]["command"] == "rules.refresh"


def test_explanations_in_worker_processes(db: Path, user: str) -> None:
    """The default set-up: Kernel SHAP in two worker processes, results and errors as in-process."""
    with TestClient(create_app(settings_for(db, explain_workers=2))) as c:
        started(c)
        assert c.app.state.ctx.explain_pool is not None
        first = c.get(f"/api/v1/explain/{user}", params={"top_k": 2}).json()
        assert first["cached"] is False and len(first["top_positive"]) <= 2
        assert c.get(f"/api/v1/explain/{user}", params={"top_k": 2}).json()["cached"] is True  # same worker
        r = c.get("/api/v1/explain/nobody")
        assert r.status_code == 404 and r.json()["message"] == "no profile for user 'nobody'"
        assert c.post("/api/v1/operations/explainer/clear").json()["effect"] == "explainer cache cleared (1 explanations)"
        assert c.get(f"/api/v1/explain/{user}", params={"top_k": 2}).json()["cached"] is False
    with TestClient(create_app(settings_for(db))) as c:  # threads: the same numbers
        in_process = started(c).get(f"/api/v1/explain/{user}", params={"top_k": 2}).json()
    assert in_process["score"] == first["score"]
    # per-dimension Kernel SHAP samples its coalitions: the same features, values equal up to sampling
    assert [c["feature"] for c in in_process["contributions"]] == [c["feature"] for c in first["contributions"]]
    np.testing.assert_allclose([c["value"] for c in in_process["contributions"]],
                               [c["value"] for c in first["contributions"]], atol=0.01)


def test_a_model_that_is_not_ready_answers_503_with_the_reason(client: TestClient, db: Path, user: str) -> None:
    from storage.projections import Models

    with EventStore(db) as store:
        Models(store.conn).add("fusion", {}, {}, None)  # registered, but its weights never arrived
    r = client.get(f"/api/v1/user/{user}")
    assert r.status_code == 503 and r.json()["error"] == "unavailable"
    assert "has no weights" in r.json()["message"]


def test_graph_statistics(client: TestClient) -> None:
    needs("scoring.graph")
    body = client.get("/api/v1/graph/statistics").json()
    assert body["nodes"]["user"] == 300 and set(body["edges"]) and body["last_seq"] > 0


def test_a_busy_scoring_service_never_stalls_the_event_loop(client: TestClient, user: str) -> None:
    """Profile reads go to a worker thread while another thread holds the scoring service (a rule change,
    a refresh): they wait for it there, and /health keeps answering meanwhile."""
    expected = client.get(f"/api/v1/user/{user}").json()  # served in place: the service was free
    svc = client.app.state.ctx.scoring()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with svc.immediate() as got:
            assert got
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    answers: dict[str, Any] = {}
    reader = threading.Thread(target=lambda: answers.update(user=client.get(f"/api/v1/user/{user}")))
    reader.start()
    try:
        time.sleep(0.3)
        assert reader.is_alive()  # waiting for the service
        t0 = time.monotonic()
        assert client.get("/health").status_code == 200
        assert time.monotonic() - t0 < 5  # the loop was free (it would hang until the release otherwise)
    finally:
        release.set()
        holder.join(10)
        reader.join(30)
    r = answers["user"]
    assert r.status_code == 200 and r.json()["profile"] == expected["profile"]


@pytest.mark.slow
def test_explanation_workers_exit_when_the_api_is_killed(db: Path) -> None:
    """A killed API process (SIGKILL: no shutdown) leaves no explanation worker behind."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from api.explain_pool import ExplainPool\n"
        "from config.settings import Settings\n"
        "pool = ExplainPool(Settings(db=Path(sys.argv[1])), 1)\n"
        "pool.warm_up()\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    api = subprocess.Popen([sys.executable, "-c", script, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert api.stdout is not None and api.stdout.readline().strip() == "ready"
        workers = [c for c in psutil.Process(api.pid).children() if "resource_tracker" not in " ".join(c.cmdline())]
        assert len(workers) == 1
    finally:
        api.kill()
        api.wait()
    gone, alive = psutil.wait_procs(workers, timeout=15)
    for p in alive:
        p.kill()
    assert not alive, "the explanation worker outlived the API"
