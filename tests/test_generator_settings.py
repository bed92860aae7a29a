"""The generator's configuration is defined once: what the settings accept, the API accepts and the
generator generates; what one refuses, the others refuse."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.schemas import DataConfig, DataConfigPatch
from config.generator import GENERATOR_FIELDS, GeneratorSettings
from config.settings import Settings
from dataflow.generator import GeneratorConfig, MockGenerator
from storage import data_config

#: the smallest dataset the settings accept, every share at an end of its range
SMALLEST = {"users": 2, "products": 1, "apps": 5, "community_size": 2, "events_per_user": 0.0,
            "history_days": 0.01, "label_share": 1.0, "new_user_share": 1.0, "seed": 0,
            "live_rate": 0.01, "calls_per_user": {"min": 0, "max": 0}}


def test_the_smallest_configuration_the_settings_accept_generates(tmp_path: Path) -> None:
    s = Settings(db=tmp_path / "x.db", **SMALLEST)
    gen = MockGenerator(GeneratorConfig.from_settings(s))
    events = list(gen.dataset())
    users = {e.user_id for e in events if e.type == "user.registered"}
    assert len(users) == 2
    assert sum(e.type == "product.listed" for e in events) == 1
    assert sum(e.type == "app.listed" for e in events) == 5
    assert not any(e.type == "call" for e in events)  # calls_per_user max 0
    live = list(islice(gen.live(0, 1_000.0, 0.01), 3))
    assert live  # the live stream runs at the slowest rate too


@pytest.mark.parametrize("field, value", [
    ("users", 1), ("apps", 4), ("products", 0), ("community_size", 1), ("history_days", 0.0),
    ("label_share", 1.5), ("seed", -1), ("live_rate", 0.0), ("events_per_user", float("nan")),
    ("locale", "chinese"),
])
def test_a_value_is_refused_alike_by_the_settings_and_the_api(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(db=tmp_path / "x.db", **{field: value})
    with pytest.raises(ValidationError, match=field):
        DataConfig.model_validate({field: value})
    with pytest.raises(ValidationError, match=field):
        DataConfigPatch.model_validate({field: value})


def test_one_field_list_for_settings_api_and_the_recorded_configuration() -> None:
    assert set(GENERATOR_FIELDS) <= set(Settings.model_fields)
    assert set(DataConfig.model_fields) == set(GENERATOR_FIELDS) == set(DataConfigPatch.model_fields)
    assert data_config.FIELDS == GENERATOR_FIELDS
    for name in GENERATOR_FIELDS:  # the same bounds everywhere
        assert Settings.model_fields[name].metadata == GeneratorSettings.model_fields[name].metadata
        assert DataConfig.model_fields[name].metadata == GeneratorSettings.model_fields[name].metadata
        assert DataConfigPatch.model_fields[name].metadata == GeneratorSettings.model_fields[name].metadata
