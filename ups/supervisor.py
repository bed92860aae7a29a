"""``ups up``'s process supervisor: the dataflow and the API as child processes.

A child that exits with an error (the dataflow or the API) is restarted after a back-off and the crash
logged; after more than ``max_restarts`` crashes of one child within ten minutes the supervisor gives up
on it, loudly: on the dataflow (the API goes on serving and reports it failed), or on the API (the
dataflow is stopped and ``ups up`` exits 1). A dataflow that stops cleanly (shutdown command) is not
restarted. When the API exits cleanly (``POST /api/v1/operations/shutdown``), the dataflow is stopped and
the supervisor exits. On Ctrl-C or SIGTERM
both are stopped cleanly: the dataflow through a ``shutdown`` command (it finishes its epoch), the API
with SIGINT (uvicorn drains requests); whatever is still alive after the timeout is killed.
When the API switched to a new database file (``data/regenerate``), the dataflow follows.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from config.db_location import DbLocation, switched_to
from config.settings import Settings
from dataflow.control import record_failure
from storage import open_store, store_exists

log = logging.getLogger("ups.supervisor")

RESTART_WINDOW_S = 600.0
#: exit codes of a child that stopped as asked (not a crash)
CLEAN_EXITS = (0, -signal.SIGINT, -signal.SIGTERM)
#: exit code of a dataflow that refused to start (a damaged recovery state, another flow on the store):
#: starting it again would refuse again
REFUSED = 2


def latest_switch(db: DbLocation, after_id: int = 0) -> tuple[int, DbLocation] | None:
    """The newest ``db.switch`` record in ``db`` (written by the API after a regenerate)."""
    with open_store(db) as store:
        row = store.ops.latest("db.switch", after_id)
    target = row["params"].get("db") if row else None
    return (int(row["id"]), switched_to(db, target)) if row and target else None


def flow_error(db: DbLocation) -> str | None:
    """Why the dataflow failed, as it recorded it in its status row (None when it did not)."""
    with open_store(db) as store:
        doc = store.status.get("dataflow")
    return str(doc["error"]) if doc and doc.get("state") == "failed" and doc.get("error") else None


def active_db(db: DbLocation) -> DbLocation:
    """Follow ``db.switch`` records: the store the system last switched to (the old ones are kept)."""
    seen = {db}
    while store_exists(db) and (sw := latest_switch(db)) is not None and sw[1] not in seen and store_exists(sw[1]):
        db = sw[1]
        seen.add(db)
    return db


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        # own session: a Ctrl-C in the terminal reaches the supervisor only, which stops children in order
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(self.env or {})},
        )

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=max(0.0, timeout))
            return True
        except subprocess.TimeoutExpired:
            return False

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class Supervisor:
    settings: Settings
    dataflow_argv: Callable[[DbLocation], list[str]]
    api_argv: Callable[[DbLocation], list[str]]
    #: extra environment of the children for a database (its recorded generator settings)
    env_for: Callable[[DbLocation], dict[str, str]] = lambda db: {}
    say: Callable[[str], None] = print
    db: DbLocation = field(init=False)
    flow: Child = field(init=False)
    api: Child = field(init=False)
    #: child name -> times of its recent crashes
    crashes: dict[str, deque[float]] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    _switch_seen: int = 0

    def __post_init__(self) -> None:
        self.db = self.settings.db
        self.flow = self._flow_child()
        self.api = self._api_child()
        sw = latest_switch(self.db)
        self._switch_seen = sw[0] if sw else 0

    def _logs(self) -> Path:
        return self.settings.model_copy(update={"db": self.db}).log_dir

    def _flow_child(self) -> Child:
        return Child("dataflow", self.dataflow_argv(self.db), self._logs() / "dataflow.log", self.env_for(self.db))

    def _api_child(self) -> Child:
        return Child("api", self.api_argv(self.db), self._logs() / "api.log", self.env_for(self.db))

    def _log_event(self, message: str) -> None:
        # the file first: whoever hears the message may read the log at once (a test did, and missed it)
        self._logs().mkdir(parents=True, exist_ok=True)
        with open(self._logs() / "supervisor.log", "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        log.warning(message)
        self.say(message)

    def start(self) -> None:
        self._logs().mkdir(parents=True, exist_ok=True)
        self.flow.start()
        self.api.start()

    def request_flow_stop(self, db: DbLocation) -> None:
        """The clean way: a shutdown command the flow applies at its next poll."""
        with open_store(db) as store:
            doc = store.status.get("dataflow")
            if doc is not None and doc.get("state") == "running":
                store.ops.request("shutdown", {}, source="supervisor")

    def _stop_flow(self, db: DbLocation, timeout: float) -> None:
        if not self.flow.alive():
            return
        self.request_flow_stop(db)
        if not self.flow.wait(timeout):
            self.flow.signal(signal.SIGTERM)
            if not self.flow.wait(5):
                self.flow.signal(signal.SIGKILL)
                self.flow.wait(5)

    def _restart(self, child: Child, code: int) -> Child | None:
        """The restarted ``child`` after a crash and the back-off, or None when it crashed too often
        (or the supervisor is stopping)."""
        now = time.time()
        crashes = self.crashes.setdefault(child.name, deque())
        while crashes and now - crashes[0] > RESTART_WINDOW_S:
            crashes.popleft()
        crashes.append(now)
        if len(crashes) > self.settings.max_restarts:
            message = (
                f"{child.name} crashed (exit code {code}) {len(crashes)} times in {RESTART_WINDOW_S:.0f} s; "
                f"not restarting it again (see {child.log_path})"
            )
            if child is self.flow:  # /health tells it too
                record_failure(self.db, f"ups up gave up on the dataflow: {message}")
            self._log_event(message)
            return None
        self._log_event(
            f"{child.name} crashed (exit code {code}); restarting in {self.settings.restart_backoff:.1f} s "
            f"(see {child.log_path})"
        )
        if self.stopping.wait(self.settings.restart_backoff):
            return None
        child.close()
        fresh = self._flow_child() if child is self.flow else self._api_child()
        fresh.start()
        return fresh

    def _follow_switch(self) -> None:
        sw = latest_switch(self.db, self._switch_seen)
        if sw is None:
            return
        self._switch_seen = sw[0]
        old, self.db = self.db, sw[1]
        self._log_event(f"the API switched to {self.db}; moving the dataflow there ({old} kept)")
        self._stop_flow(old, self.settings.shutdown_timeout)
        self.flow.close()
        self.flow = self._flow_child()
        self.flow.start()
        open_store(self.db).close()  # switches recorded in the new file are followed from its start
        self._switch_seen = 0

    def run(self) -> int:
        """Supervise until the API exits cleanly, gives up, or :meth:`stop` is called; returns the exit status."""
        flow_given_up = False
        while not self.stopping.is_set():
            code = self.api.exit_code()
            if code is not None:
                if code in CLEAN_EXITS:
                    self.say(f"the API exited (code {code}); stopping the dataflow")
                    return self._end(0)
                api = self._restart(self.api, code)
                if api is None:
                    if self.stopping.is_set():
                        break
                    self._log_event("giving up on the API: stopping the dataflow; ups up exits with status 1")
                    return self._end(1)
                self.api = api
            fcode = self.flow.exit_code()
            if fcode is not None and not flow_given_up:
                flow_given_up = self._after_flow_exit(fcode)
            self._follow_switch()
            self.stopping.wait(0.5)
        return self._stop_all()

    def _after_flow_exit(self, code: int) -> bool:
        """Restart a crashed dataflow; True when it stays down (stopped cleanly, refused, or given up)."""
        if code == 0:
            self.say("the dataflow stopped (shutdown); waiting for the API")
            return True
        if code == REFUSED:
            why = flow_error(self.db) or f"see {self.flow.log_path}"
            self._log_event(f"the dataflow refused to start (exit code {code}): {why}; not restarting it")
            return True
        flow = self._restart(self.flow, code)
        if flow is None:
            return True
        self.flow = flow
        return False

    def _end(self, status: int) -> int:
        self._stop_flow(self.db, self.settings.shutdown_timeout)
        self._close()
        return status

    def stop(self) -> None:
        self.stopping.set()

    def _stop_all(self) -> int:
        self.say("stopping: dataflow (shutdown command) and API")
        self.request_flow_stop(self.db)
        self.api.signal(signal.SIGINT)
        deadline = time.monotonic() + self.settings.shutdown_timeout
        for child in (self.flow, self.api):
            if not child.wait(deadline - time.monotonic()):
                self._log_event(f"{child.name} did not stop within {self.settings.shutdown_timeout:.0f} s; killing it")
                child.signal(signal.SIGKILL)
                child.wait(5)
        self._close()
        return 0

    def _close(self) -> None:
        self.flow.close()
        self.api.close()


def python_module(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def install_signal_handlers(sup: Supervisor) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sup.stop())
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: sup.stop())
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
