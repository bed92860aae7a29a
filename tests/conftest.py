from __future__ import annotations

from pathlib import Path

import pytest

from dataflow.generator import GeneratorConfig, MockGenerator


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ups.db"


@pytest.fixture(scope="session")
def small_gen() -> MockGenerator:
    return MockGenerator(GeneratorConfig(users=300, products=20, apps=12, events_per_user=15, seed=7))
