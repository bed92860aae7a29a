"""The generator's settings through the API: validated, kept in the log, live part sent to the flow."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api_support import CommandResolver, put_flow_status, settings_for, started
from storage.event_store import EventStore


@pytest.fixture
def client(db_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(db_path, users=500, live_rate=50.0, command_ack_timeout=2))) as c:
        yield started(c)


def test_config_defaults_to_the_settings(client: TestClient) -> None:
    body = client.get("/api/v1/data/config").json()
    assert body["source"] == "settings"
    assert body["config"]["users"] == 500 and body["config"]["live_rate"] == 50.0


def test_config_changes_are_kept_as_events_and_read_back(client: TestClient, db_path: Path) -> None:
    r = client.post("/api/v1/data/config", json={"users": 800, "label_share": 0.3})
    assert r.status_code == 200
    assert r.json()["config"]["users"] == 800 and r.json()["live"] is None  # nothing live changed
    again = client.get("/api/v1/data/config").json()
    assert again["config"]["users"] == 800 and again["config"]["label_share"] == 0.3
    assert again["config"]["live_rate"] == 50.0  # untouched fields keep their value
    assert again["source"].startswith("event seq")
    with EventStore(db_path) as store:
        assert store.counts_by_type()["ops.data_config"] == 1


def test_live_changes_reach_the_running_dataflow(client: TestClient, db_path: Path) -> None:
    put_flow_status(db_path)
    with CommandResolver(db_path) as flow:
        r = client.post("/api/v1/data/config", json={"live_rate": 2000, "live_delay": 0.5})
    live = r.json()["live"]
    assert live["command"] == "generator.config" and live["state"] == "applied"
    assert flow.seen[0]["params"] == {"rate": 2000.0, "delay": 0.5}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"users": 1}, "body.users"),
        ({"users": 30, "community_size": 40}, "body"),  # community larger than the population
        ({"live_rate": "Infinity"}, "body.live_rate"),
        ({"label_share": 1.5}, "body.label_share"),
        ({"locale": "../etc"}, "body.locale"),
        ({"apps": 3}, "body.apps"),
        ({"colour": "red"}, "body.colour"),
    ],
)
def test_invalid_config_is_refused_naming_the_field(client: TestClient, body: dict, field: str) -> None:
    r = client.post("/api/v1/data/config", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["details"][0]["field"] == field
    assert client.get("/api/v1/data/config").json()["source"] == "settings"  # nothing stored


def test_cross_field_problem_is_explained(client: TestClient) -> None:
    r = client.post("/api/v1/data/config", json={"users": 30})  # the default community size is 40
    assert r.status_code == 422
    assert r.json()["message"] == "body: community_size (40) must be <= users (30)"


def test_regenerate_validates_its_config_before_starting(client: TestClient) -> None:
    r = client.post("/api/v1/data/regenerate", json={"users": 1})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "body.users"
    assert client.get("/api/v1/jobs").json()["jobs"] == []


def test_null_fields_keep_their_value(client: TestClient) -> None:
    r = client.post("/api/v1/data/config", json={"live_rate": 25, "live_delay": None, "users": None})
    assert r.status_code == 200
    config = r.json()["config"]
    assert config["live_rate"] == 25.0 and config["live_delay"] == 0.0 and config["users"] == 500


def test_edge_ranges_are_kept_and_read_back(client: TestClient) -> None:
    assert client.get("/api/v1/data/config").json()["config"]["calls_per_user"] == {"min": 0, "max": None}
    r = client.post("/api/v1/data/config", json={"calls_per_user": {"min": 2, "max": 6},
                                                  "app_uses_per_user": {"min": 1, "max": None}})
    assert r.status_code == 200, r.text
    config = client.get("/api/v1/data/config").json()["config"]
    assert config["calls_per_user"] == {"min": 2, "max": 6}
    assert config["app_uses_per_user"] == {"min": 1, "max": None}
    assert config["orders_per_user"] == {"min": 0, "max": None}
    # a later change of another field keeps the ranges
    client.post("/api/v1/data/config", json={"users": 600})
    assert client.get("/api/v1/data/config").json()["config"]["calls_per_user"] == {"min": 2, "max": 6}


@pytest.mark.parametrize(
    "body, field, problem",
    [
        ({"calls_per_user": {"min": 5, "max": 2}}, "body.calls_per_user", "min (5) must be <= max (2)"),
        ({"orders_per_user": {"min": -1, "max": 3}}, "body.orders_per_user.min", "greater than or equal to 0"),
        ({"app_clicks_per_user": {"min": 0, "max": 20_000}}, "body.app_clicks_per_user.max", "less than or equal to 10000"),
        ({"product_clicks_per_user": {"min": 1, "top": 3}}, "body.product_clicks_per_user.top", "xtra"),
    ],
)
def test_invalid_edge_range_is_refused_naming_the_field(client: TestClient, body: dict, field: str, problem: str) -> None:
    for path in ("/api/v1/data/config", "/api/v1/data/regenerate"):
        r = client.post(path, json=body)
        assert r.status_code == 422, r.text
        detail = r.json()["details"][0]
        assert detail["field"] == field and problem in detail["problem"], detail
    assert client.get("/api/v1/data/config").json()["source"] == "settings"  # nothing stored
    assert client.get("/api/v1/jobs").json()["jobs"] == []  # nothing started
