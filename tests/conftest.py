from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from dataflow.generator import GeneratorConfig, MockGenerator
from pg_server import PG_ROOT, PostgresServer, find_bin_dir

if TYPE_CHECKING:
    import torch

    from storage import DbLocation


#: without an NVIDIA device node CUDA cannot be there: skip its cases at collection (the fixture
#: checks torch itself otherwise), before module fixtures are built for them
_NO_GPU = pytest.mark.skipif(not any(Path("/dev").glob("nvidia[0-9]*")), reason="no CUDA device")


@pytest.fixture(params=[pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, _NO_GPU])])
def device(request: pytest.FixtureRequest) -> "torch.device":
    """Each torch device present: the CPU always, CUDA where torch sees a GPU (skipped elsewhere)."""
    import torch  # here, not at collection: most test modules never touch torch

    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device(request.param)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ups.db"


@pytest.fixture(scope="session")
def small_gen() -> MockGenerator:
    return MockGenerator(GeneratorConfig(users=300, products=20, apps=12, events_per_user=15, seed=7))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One throw-away PostgreSQL server for the session (see tests/pg_server.py)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        reason = f"PostgreSQL server binaries (initdb, pg_ctl) not found under {PG_ROOT}/*/bin"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs Debian's postgresql package")
        pytest.skip(f"{reason}: install Debian's postgresql package to run the PostgreSQL tests")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """The URL of a fresh, empty database on the session's server."""
    return pg_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> "DbLocation":
    """A new store's location on each backend: a SQLite file, a fresh PostgreSQL database."""
    from storage import parse_db

    if request.param == "postgresql":
        return parse_db(request.getfixturevalue("pg_url"))
    return tmp_path / "ups.db"
