"""Helpers for the API tests: an app on a temporary database, and a stand-in for the dataflow's side of
the storage contract (a status row, resolving commands) where a test is about the API's handling."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from storage.db import connect
from storage.operations import OpsHistory, Status
from config.settings import Settings


def settings_for(db: Path, **kw: Any) -> Settings:
    """Test settings: explanations in threads unless a test asks for worker processes (each imports torch);
    job workers started by the first job rather than by every app; Litestar's TestClient's host name
    allowed besides the loopback names."""
    return Settings(db=db, **{"explain_workers": 0, "warm_job_workers": False,
                              "allowed_hosts": [*LOOPBACK_NAMES, TEST_CLIENT_HOST], **kw})


#: the Host Litestar's TestClient sends
TEST_CLIENT_HOST = "testserver.local"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def put_flow_status(db: Path, **fields: Any) -> None:
    doc = {
        "state": "running", "ingestion": "running", "refresh": "running", "events_in": 10, "events_per_s": 5.0,
        "last_seq": 0, "lag_s": 0.5, "dead_letters": 0, "started_at": time.time(), "pid": os.getpid(),
        "workers": 1, "refresh_queue": 3, "oldest_pending_s": 0.1, "refreshes_per_s": 1.0, "model_version": None,
        "device": "cpu",
    }
    doc.update(fields)
    conn = connect(db)
    try:
        Status(conn).put("dataflow", doc)
    finally:
        conn.close()


class CommandResolver:
    """Resolves pending commands the way the dataflow does (``resolve(id, 'applied', effect)``)."""

    def __init__(self, db: Path, delay: float = 0.1) -> None:
        self.db, self.delay = db, delay
        self.seen: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = connect(self.db)
        ops = OpsHistory(conn)
        while not self._stop.is_set():
            for row in ops.pending():
                time.sleep(self.delay)
                ops.resolve(row["id"], "applied", f"{row['command']} done")
                self.seen.append(row)
                if row["command"] == "shutdown":
                    put_flow_status(self.db, state="stopped")
            self._stop.wait(0.02)
        conn.close()

    def __enter__(self) -> "CommandResolver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def sse_events(text: str) -> Iterator[tuple[str, str]]:
    for block in text.split("\r\n\r\n" if "\r\n" in text else "\n\n"):
        event, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if event:
            yield event, data or ""


def started(client: Any, timeout: float = 60) -> Any:
    """Wait until the app's start-up warm-up is done (it may log the default rules)."""
    deadline = time.monotonic() + timeout
    while client.get("/health").json()["api"]["scoring"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    return client


def needs(*modules: str) -> None:
    """Skip, naming the missing module, until the packages a test runs on are installed."""
    import pytest

    for name in modules:
        pytest.importorskip(name, reason=f"{name} is not there yet")


#: the end-to-end run: the dataflow, and the training ``ups up`` does on an empty database
SYSTEM = ("dataflow.runner", "scoring.service", "scoring.training", "scoring.embed")
#: real training jobs
TRAINING = ("scoring.training", "scoring.embed")


def folded_store(db: Path, gen: Any) -> Path:
    """The generator's dataset in a new store, with profiles folded by the shared pure fold."""
    from scoring_support import fold_profiles
    from storage.event_store import EventStore

    with EventStore(db) as store:
        store.append(gen.dataset())
        fold_profiles(store)
    return db
