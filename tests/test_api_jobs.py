"""Jobs through the API: validation of job parameters, one job of a group at a time, listing,
recovery of jobs a killed API left behind, and the job path helpers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
from litestar.testing import TestClient

from api.app import create_app
from dataflow.prepare import next_db
from api.jobs import finite_only
from pydantic import TypeAdapter
from dataflow.prepare import Regenerated
from scoring.operation_results import FusionJob, GraphRefreshed, HgtJob
from api_support import TRAINING, folded_store, needs, settings_for, started
from storage.db import connect
from storage.operations import Jobs
from storage.projections import Models
from config.settings import Settings
from storage import PostgresUrl, open_store, parse_db, store_exists


def _documented(kind: type, result: dict) -> None:
    """The stored result has every field its kind's schema documents, of the documented types."""
    TypeAdapter(kind).validate_python(result)


@pytest.fixture
def client(db_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(db_path))) as c:
        yield started(c)


def _running(db: Path, kind: str) -> str:
    conn = connect(db)
    jobs = Jobs(conn)
    job_id = jobs.create(kind, {})
    jobs.update(job_id, state="running", started_at=time.time())
    conn.close()
    return job_id


@pytest.mark.parametrize(
    "path, busy_kind",
    [
        ("/api/v1/graph/refresh", "graph.refresh"),
        ("/api/v1/graph/refresh", "training.hgt"),  # both retrain the HGT: one at a time
        ("/api/v1/operations/training/hgt", "graph.refresh"),
        ("/api/v1/operations/fusion/train", "fusion.train"),
        ("/api/v1/data/regenerate", "data.regenerate"),
    ],
)
def test_a_busy_job_group_answers_409(client: TestClient, db_path: Path, path: str, busy_kind: str) -> None:
    busy = _running(db_path, busy_kind)
    r = client.post(path, json={})
    assert r.status_code == 409
    assert busy in r.json()["message"] and r.json()["error"] == "conflict"
    assert len(client.get("/api/v1/jobs").json()["jobs"]) == 1  # no second job was created


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/api/v1/graph/refresh", {"mode": "everything"}, "body.mode"),
        ("/api/v1/graph/refresh", {"graph_scope": "sampled", "sample_ratio": 0}, "body.sample_ratio"),
        ("/api/v1/graph/refresh", {"epochs": 10_000}, "body.epochs"),
        ("/api/v1/operations/fusion/train", {"lr": -1}, "body.lr"),
        ("/api/v1/operations/fusion/train", {"epochs": 1.5}, "body.epochs"),
        ("/api/v1/operations/training/hgt", {"train_ratio": 0.5, "val_ratio": 0.1, "test_ratio": 0.1}, "body"),
        ("/api/v1/operations/training/hgt", {"mode": "magic"}, "body.mode"),
        ("/api/v1/operations/training/hgt", {"temperature": "nan"}, "body.temperature"),
    ],
)
def test_job_parameters_are_validated(client: TestClient, path: str, body: dict, field: str) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["details"][0]["field"] == field
    assert client.get("/api/v1/jobs").json()["jobs"] == []


def test_split_must_sum_to_one(client: TestClient) -> None:
    r = client.post("/api/v1/operations/training/hgt", json={"train_ratio": 0.5, "val_ratio": 0.1, "test_ratio": 0.1})
    assert "must be 1, got 0.7" in r.json()["message"]
    # shares left out come from the server's train_split (0.8, 0.1, 0.1): 0.7 + 0.1 + 0.1 is not 1 either
    r = client.post("/api/v1/operations/training/hgt", json={"train_ratio": 0.7})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "body"
    assert "got 0.9 (val_ratio 0.1, test_ratio 0.1 from the server's train_split)" in r.json()["message"]
    assert client.get("/api/v1/jobs").json()["jobs"] == []


@pytest.mark.parametrize(
    "path, body, expected",
    [
        # nothing given: every training parameter is the server's setting, as `ups train` would use
        ("/api/v1/operations/training/hgt", {},
         {"epochs": 7, "neg_ratio": 5, "temperature": 0.7, "lr": 0.003, "seed": 9, "mode": "minibatch",
          "sample_ratio": 0.5, "train_ratio": 0.6, "val_ratio": 0.2, "test_ratio": 0.2, "embed": True}),
        # what is given wins, null included as "not given"; the rest still comes from the settings
        ("/api/v1/operations/training/hgt", {"neg_ratio": 2, "temperature": None, "train_ratio": 0.7, "val_ratio": 0.1},
         {"epochs": 7, "neg_ratio": 2, "temperature": 0.7, "train_ratio": 0.7, "val_ratio": 0.1, "test_ratio": 0.2}),
        ("/api/v1/operations/fusion/train", {}, {"samples": 1234, "epochs": 11, "lr": 0.02}),
        ("/api/v1/operations/fusion/train", {"epochs": 3}, {"samples": 1234, "epochs": 3, "lr": 0.02}),
    ],
)
def test_training_parameters_left_out_take_the_settings(db_path: Path, path: str, body: dict, expected: dict) -> None:
    settings = settings_for(db_path, train_epochs=7, train_neg_ratio=5, train_temperature=0.7, train_lr=0.003,
                            train_seed=9, train_mode="minibatch", train_sample_ratio=0.5, train_split=(0.6, 0.2, 0.2),
                            fusion_samples=1234, fusion_epochs=11, fusion_lr=0.02)
    with TestClient(create_app(settings)) as c:  # the job's worker is cancelled when the app stops
        r = started(c).post(path, json=body)
        assert r.status_code == 202, r.text
        params = c.get(f"/api/v1/jobs/{r.json()['id']}").json()["params"]
    assert {k: params[k] for k in expected} == expected


def test_job_list_and_lookup(client: TestClient, db_path: Path) -> None:
    a = _running(db_path, "fusion.train")
    r = client.get(f"/api/v1/jobs/{a}")
    assert r.status_code == 200
    job = r.json()
    assert job["state"] == "running" and job["kind"] == "fusion.train" and 0 <= job["progress"] <= 1
    assert job["duration_s"] is not None and job["duration_s"] >= 0
    assert [j["id"] for j in client.get("/api/v1/jobs", params={"kind": "fusion.train"}).json()["jobs"]] == [a]
    assert client.get("/api/v1/jobs", params={"kind": "graph.refresh"}).json()["jobs"] == []
    r = client.get("/api/v1/jobs", params={"kind": "nonsense"})
    assert r.status_code == 404 and "kinds:" in r.json()["message"]


def test_jobs_left_by_a_previous_api_are_marked_failed(db_path: Path) -> None:
    stale = _running(db_path, "graph.refresh")
    with TestClient(create_app(settings_for(db_path))) as c:
        job = c.get(f"/api/v1/jobs/{stale}").json()
        assert job["state"] == "failed" and "interrupted" in job["error"]
        assert c.get("/health").json()["jobs"]["active"] == []


def test_new_database_names_never_overwrite(tmp_path: Path) -> None:
    db = tmp_path / "ups.db"
    assert next_db(db) == tmp_path / "ups.gen2.db"
    (tmp_path / "ups.gen2.db").touch()
    assert next_db(db) == tmp_path / "ups.gen3.db"
    assert next_db(tmp_path / "ups.gen2.db") == tmp_path / "ups.gen3.db"


def test_new_database_names_on_postgresql_never_take_an_existing_one(pg_url: str) -> None:
    url = parse_db(pg_url)
    assert isinstance(url, PostgresUrl)
    gen2 = next_db(url)  # made on the same server, reached as the current one is
    assert gen2 == url.with_database(f"{url.database}_gen2") and store_exists(gen2)
    assert next_db(url) == url.with_database(f"{url.database}_gen3")
    assert next_db(gen2) == url.with_database(f"{url.database}_gen4")


def test_job_results_carry_no_nan() -> None:
    import numpy as np

    out = finite_only({"loss": [1.0, float("nan")], "auc": np.float32(0.75), "inf": float("inf"), "n": 3})
    assert out == {"loss": [1.0, None], "auc": 0.75, "inf": None, "n": 3}


def test_job_params_echo_what_the_job_runs_with(client: TestClient) -> None:
    # a full graph is the whole graph whatever sample ratio the form still holds; no epochs without training
    r = client.post("/api/v1/graph/refresh", json={"graph_scope": "full", "sample_ratio": 0.3, "epochs": 7})
    assert r.status_code == 202, r.text
    assert r.json()["params"] == {"mode": "embedding_only", "graph_scope": "full", "sample_ratio": 1.0}
    job = client.get(f"/api/v1/jobs/{r.json()['id']}").json()
    assert job["params"]["sample_ratio"] == 1.0


# ------------------------------------------------------------------ real jobs in worker processes


@pytest.fixture(scope="module")
def trained_db(tmp_path_factory: pytest.TempPathFactory, small_gen) -> Path:
    """A small folded store; the HGT tests train its model through the API."""
    return folded_store(tmp_path_factory.mktemp("jobs") / "ups.db", small_gen)


@pytest.fixture
def job_client(trained_db: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(trained_db, device="cpu"))) as c:
        yield started(c)


def test_hgt_training_job_runs_to_completion_in_a_worker(job_client: TestClient, trained_db: Path) -> None:
    needs(*TRAINING)
    r = job_client.post("/api/v1/operations/training/hgt",
                        json={"epochs": 2, "seed": 3, "train_ratio": 0.7, "val_ratio": 0.15, "test_ratio": 0.15})
    assert r.status_code == 202 and r.headers["location"] == f"/api/v1/jobs/{r.json()['id']}"
    job_id = r.json()["id"]
    assert job_client.post("/api/v1/graph/refresh", json={}).status_code == 409  # same group, still busy
    deadline = time.monotonic() + 300
    seen = set()
    while time.monotonic() < deadline:
        job = job_client.get(f"/api/v1/jobs/{job_id}").json()
        seen.add(job["state"])
        if job["state"] in ("succeeded", "failed"):
            break
        time.sleep(0.3)
    assert job["state"] == "succeeded", job["error"]
    assert "running" in seen and job["progress"] == 1.0 and job["duration_s"] > 0
    _documented(HgtJob, job["result"])
    hgt = job["result"]["hgt"]
    assert len(hgt["loss_history"]) == 2 and set(hgt["val_auc"]) == set(hgt["test_auc"])
    # left out of the request: the model was trained with the settings' negatives, temperature and lr
    conn = connect(trained_db)
    model = Models(conn).get("hgt", hgt["version"])
    conn.close()
    assert model is not None
    defaults, used = Settings(), model.config["training"]
    assert (used["neg_ratio"], used["temperature"], used["lr"]) == (
        defaults.train_neg_ratio, defaults.train_temperature, defaults.train_lr)
    assert used["epochs"] == 2 and used["seed"] == 3  # and what was given
    assert job["result"]["embeddings"]["written"] > 0
    assert job_client.get("/health").json()["models"]["hgt"] == hgt["version"]


def test_sampled_refresh_and_fusion_jobs_with_wait(job_client: TestClient) -> None:
    needs(*TRAINING)
    r = job_client.post("/api/v1/graph/refresh?wait=true",
                        json={"mode": "embedding_only", "graph_scope": "sampled", "sample_ratio": 0.5})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["state"] == "succeeded", job["error"]
    res = job["result"]
    _documented(GraphRefreshed, res)
    assert "hgt" not in res and "fusion" not in res  # an embedding-only refresh trains nothing
    assert res["sample_ratio"] == 0.5 and res["node_counts"]["user"] < 300 and res["duration_s"] > 0
    # the job's metrics say how long its work took and how long it took from submission to its end
    assert 0 < res["work_s"] <= job["duration_s"] + 0.01 and job["duration_s"] <= res["wall_s"] + 0.01
    assert res["wall_s"] == pytest.approx(job["finished_at"] - job["created_at"], abs=0.01)
    # a second refresh runs in the same (warm) worker process
    again = job_client.post("/api/v1/graph/refresh?wait=true",
                            json={"mode": "embedding_only", "graph_scope": "sampled", "sample_ratio": 0.5}).json()
    assert again["state"] == "succeeded", again["error"]
    assert again["result"]["worker_pid"] == res["worker_pid"] and again["result"]["work_s"] <= again["result"]["wall_s"]
    assert again["result"]["node_counts"] == res["node_counts"]  # the kept graph is the same graph
    r = job_client.post("/api/v1/operations/fusion/train?wait=true", json={"samples": 0, "epochs": 20, "lr": 0.02})
    job = r.json()
    assert r.status_code == 200 and job["state"] == "succeeded", job["error"]
    _documented(FusionJob, job["result"])
    assert job_client.get("/health").json()["models"]["fusion"] is not None
    kinds = [j["kind"] for j in job_client.get("/api/v1/jobs").json()["jobs"]]
    assert kinds[:2] == ["fusion.train", "graph.refresh"]


@pytest.mark.slow
def test_regenerate_switches_to_a_new_database_and_keeps_the_old(folded_copy: Path) -> None:
    needs(*TRAINING)
    from ups.supervisor import active_db

    with TestClient(create_app(settings_for(folded_copy, device="cpu", bootstrap_epochs=1,
                                            bootstrap_fusion_epochs=5))) as c:
        started(c)
        r = c.post("/api/v1/data/regenerate?wait=true",
                   json={"users": 120, "community_size": 20, "events_per_user": 8, "seed": 5,
                         "calls_per_user": {"min": 2, "max": 4}})
        job = r.json()
        assert r.status_code == 200 and job["state"] == "succeeded", job["error"]
        _documented(Regenerated, job["result"])
        new = Path(job["result"]["db"])
        assert new == folded_copy.with_name("ups.gen2.db") and new.exists() and folded_copy.exists()
        assert c.get("/health").json()["api"]["db"] == str(new)
        config = c.get("/api/v1/data/config").json()
        assert config["config"]["users"] == 120 and config["config"]["seed"] == 5
        assert config["config"]["calls_per_user"] == {"min": 2, "max": 4}
        assert c.get("/health").json()["models"]["fusion"] is not None  # the new file has its own model
        assert c.get("/api/v1/user/U0000119").status_code == 200
        assert c.get("/api/v1/user/U0000200").status_code == 404  # the old population is not served
    conn = connect(folded_copy)
    switch = conn.execute("SELECT params FROM ops_history WHERE command = 'db.switch'").fetchone()
    conn.close()
    assert switch is not None and str(new) in switch[0]
    assert active_db(folded_copy) == new  # `ups up`/`ups api` on the old file follow the switch
    # the new dataset was generated with the per-user edge range
    conn = connect(new)
    calls = dict(conn.execute("SELECT user_id, count(*) FROM events WHERE type = 'call' AND seq <= "
                              "(SELECT max(seq) FROM events WHERE type = 'label.observed') GROUP BY user_id"))
    conn.close()
    assert len(calls) == 120 and all(2 <= n <= 4 for n in calls.values()), calls


@pytest.mark.slow
def test_regenerate_on_postgresql_switches_to_a_new_database_on_the_same_server(pg_url: str) -> None:
    needs(*TRAINING)
    from ups.supervisor import active_db

    url = parse_db(pg_url)
    assert isinstance(url, PostgresUrl)
    new = url.with_database(f"{url.database}_gen2")
    with TestClient(create_app(settings_for(url, device="cpu", bootstrap_epochs=1, bootstrap_fusion_epochs=5))) as c:
        started(c)
        r = c.post("/api/v1/data/regenerate?wait=true",
                   json={"users": 120, "community_size": 20, "events_per_user": 8, "seed": 5})
        job = r.json()
        assert r.status_code == 200 and job["state"] == "succeeded", job["error"]
        assert job["result"]["db"] == str(new) == c.get("/health").json()["api"]["db"]
        assert c.get("/health").json()["models"]["fusion"] is not None  # the new database has its own model
        assert c.get("/api/v1/user/U0000119").status_code == 200
    assert active_db(url) == new  # `ups up`/`ups api` on the old URL follow the switch
    with open_store(new) as store, open_store(url) as old:
        assert store.profiles.count() == 120 and old.profiles.count() == 0  # the old database is kept as it was


@pytest.fixture
def folded_copy(trained_db: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "ups.db"
    shutil.copy(trained_db, copy)
    return copy


def test_fusion_training_job_in_a_worker_process(trained_db: Path) -> None:
    """Needs only the scoring package: the fusion layer trains on the planted labels."""
    with TestClient(create_app(settings_for(trained_db, device="cpu"))) as c:
        started(c)
        before = c.get("/health").json()["models"]["fusion"]
        r = c.post("/api/v1/operations/fusion/train?wait=true", json={"samples": 0, "epochs": 30, "lr": 0.05})
        job = r.json()
        assert r.status_code == 200 and job["state"] == "succeeded", job["error"]
        fusion = job["result"]["fusion"]
        assert set(fusion["auc"]) == {"rule", "rule_head", "gnn", "fused", "oracle"} and fusion["n_train"] > 0
        assert fusion["fusion_version"] != before
        assert c.get("/health").json()["models"]["fusion"] == fusion["fusion_version"]
        assert job["duration_s"] > 0 and job["params"] == {"samples": 0, "epochs": 30, "lr": 0.05}


def test_a_starting_api_fails_only_the_jobs_of_api_processes_gone_from_its_host() -> None:
    import os
    import socket
    import subprocess

    from api.jobs import _orphaned

    host = socket.gethostname()
    ended = subprocess.Popen(["true"])  # a process that has ended (and been reaped): its pid names no one
    ended.wait()
    gone = f"{host}:{ended.pid}"
    assert _orphaned(gone) and _orphaned(f"{host}:{os.getpid()}") and _orphaned(None)
    assert not _orphaned(f"{host}:{os.getppid()}")  # another API node on this host, alive
    assert not _orphaned("another-host:1")  # a node elsewhere: its jobs are its own
