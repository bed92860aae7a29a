"""Which generator configuration a restarted flow runs with: the dataset's own, plus the newest live rate."""

from __future__ import annotations

from pathlib import Path

from storage.event_store import EventStore
from storage import data_config
from config.settings import Settings


def test_in_effect_keeps_dataset_fields_of_generation_and_takes_newest_live_fields(tmp_path: Path) -> None:
    db = tmp_path / "ups.db"
    generated = data_config.of_settings(Settings(db=db, users=300, live_rate=50.0))
    pending = {**generated, "users": 9_000, "calls_per_user": {"min": 2, "max": 4}, "live_rate": 125.0}
    with EventStore(db) as store:
        assert data_config.in_effect(store) is None
        store.append([data_config.event(generated)])
        assert data_config.in_effect(store) == generated
        store.append([data_config.event(pending)])
        effect = data_config.in_effect(store)
        newest = data_config.latest(store)
    assert newest is not None and newest[0] == pending  # what the next regenerate would use
    assert effect is not None
    assert effect["users"] == 300 and effect["calls_per_user"] == generated["calls_per_user"]
    assert effect["live_rate"] == 125.0
    env = data_config.as_env(effect)
    assert env["UPS_USERS"] == "300" and env["UPS_LIVE_RATE"] == "125.0"
