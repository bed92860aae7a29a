"""Run-time control of a running flow: pause/resume flags, pacing, stop, and the control thread
that polls operator commands from ``ops_history`` and writes the ``dataflow`` status row.

One :class:`FlowControl` exists per flow process and is handed explicitly to the sources, sinks and
(optionally) the refresh step; Bytewax workers of one process are threads, so they all see it.

Commands are rows ``store.ops.request(command, params, source)`` with ``command`` in :data:`COMMANDS`;
the flow resolves each with ``resolve(id, "applied"|"rejected", effect)``. The status document
``store.status.put("dataflow", {...})`` carries :data:`STATUS_KEYS` plus whatever the
refresh step reports through :meth:`FlowControl.set_refresh_status`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from config.db_location import DbLocation
from storage import DatabaseError
from storage import Store, open_store

log = logging.getLogger(__name__)

COMMANDS = (
    "ingestion.start",
    "ingestion.stop",
    "incremental.start",
    "incremental.stop",
    "generator.config",
    "shutdown",
)
STATUS_KEYS = (
    "state",
    "ingestion",
    "refresh",
    "events_in",
    "events_per_s",
    "last_seq",
    "lag_s",
    "dead_letters",
    "started_at",
    "pid",
    "workers",
)
#: operator switches that outlast the flow process: the newest applied command of each pair sets the
#: switch when a flow starts
SWITCHES = (("ingestion.stop", "ingestion.start"), ("incremental.stop", "incremental.start"))
#: checkpoint name of the profiles projection (written with the profile upserts)
PROFILES_CHECKPOINT = "profiles"
#: the status component a process running the embedding refresh writes, as ``dataflow.refresh.<process>``:
#: in a cluster the refresher runs on one worker, whichever process that is, while process 0 alone
#: writes the ``dataflow`` document, which takes the refresh figures from there
REFRESH_COMPONENT = "dataflow.refresh"


#: WAL pages after which a writer checkpoints by itself; normally the control thread has done it long before
WRITER_AUTOCHECKPOINT_PAGES = 100_000


def tune_writer(store: Store, cache_mb: int) -> None:
    """Settings of the flow's writer connections: a page cache that holds the log's indexes (every
    append touches them), and WAL checkpoints left to the control thread (:meth:`ControlLoop.run`)
    so the writers do not stop for the copy and sync of each one."""
    store.tune_writer(cache_mb, WRITER_AUTOCHECKPOINT_PAGES)


@dataclass
class FlowControl:
    """Shared switches of one flow process (thread-safe: Bytewax workers are threads)."""

    rate: float = 200.0
    delay: float = 0.0
    ingestion_paused: bool = False
    refresh_paused: bool = False
    #: True once a refresh step is attached; status shows "off" otherwise
    refresh_attached: bool = False
    workers: int = 1
    started_at: float = field(default_factory=time.time)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _refresh_status: dict[str, Any] = field(default_factory=dict, repr=False)

    # -------------------------------------------------------------- stop

    def request_stop(self, why: str = "") -> None:
        if not self._stop.is_set():
            log.info("stop requested %s", why)
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -------------------------------------------------------------- refresh step hook

    def set_refresh_status(self, **values: Any) -> None:
        """Called by the refresh step: refresh_queue, refresh_backfill, oldest_pending_s, refreshes_per_s,
        model_version, device."""
        with self._lock:
            self._refresh_status.update(values)

    def refresh_status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._refresh_status)

    # -------------------------------------------------------------- commands

    def apply(self, command: str, params: dict[str, Any]) -> tuple[str, str]:
        """Apply one operator command; returns (state, effect) for ``ops_history``."""
        if command == "ingestion.stop":
            was = self.ingestion_paused
            self.ingestion_paused = True
            return "applied", "ingestion already paused" if was else "ingestion paused: the log stops growing"
        if command == "ingestion.start":
            was = self.ingestion_paused
            self.ingestion_paused = False
            return "applied", "ingestion resumed" if was else "ingestion already running"
        if command in ("incremental.stop", "incremental.start"):
            self.refresh_paused = command == "incremental.stop"
            word = "paused" if self.refresh_paused else "resumed"
            if not self.refresh_attached:
                return "applied", f"refresh branch {word} (no refresh step is attached to this flow)"
            return "applied", f"refresh branch {word}"
        if command == "generator.config":
            try:
                rate = float(params.get("rate", self.rate))
                delay = float(params.get("delay", self.delay))
            except (TypeError, ValueError):
                return "rejected", f"rate and delay must be numbers, got {params!r}"
            if not (math.isfinite(rate) and 0 < rate <= 1_000_000):
                return "rejected", f"rate must be within (0, 1000000] events/s, got {rate}"
            if not (math.isfinite(delay) and 0 <= delay <= 60):
                return "rejected", f"delay must be within [0, 60] s, got {delay}"
            self.rate, self.delay = rate, delay
            return "applied", f"generator rate {rate:g} events/s, delay {delay:g} s"
        if command == "shutdown":
            self.request_stop("by command")
            return "applied", "flow stopping (sources end, state snapshotted)"
        return "rejected", f"unknown command {command!r}; known: {', '.join(COMMANDS)}"


def record_failure(db: DbLocation, error: str, *, pid: int | None = None) -> None:
    """The ``dataflow`` status row says the flow failed, and why (read by the API's /health); ``pid``:
    the failed flow's process, when the caller is that process."""
    with open_store(db) as store, store.transaction():
        status = store.status
        doc = {k: v for k, v in (status.get("dataflow") or {}).items() if k != "updated_at"}
        doc.update(state="failed", error=error, failed_at=time.time())
        if pid is not None:
            doc["pid"] = pid
        status.put("dataflow", doc)


class ControlLoop(threading.Thread):
    """Polls commands, writes the status row and checkpoints the WAL while the flow runs (one per process)."""

    def __init__(
        self,
        db: DbLocation,
        control: FlowControl,
        *,
        status_interval: float,
        poll_interval: float,
        process_id: int = 0,
        on_status: Callable[[dict[str, Any]], None] | None = None,
        checkpoint_interval: float = 1.0,
    ) -> None:
        super().__init__(name="ups-flow-control", daemon=True)
        self.db = db
        self.control = control
        self.status_interval = status_interval
        self.poll_interval = poll_interval
        self.process_id = process_id
        #: only process 0 of a cluster resolves rows and writes the ``dataflow`` document
        self.resolve = process_id == 0
        self.on_status = on_status
        self.checkpoint_interval = checkpoint_interval
        self._done = threading.Event()
        self._rate_window: list[tuple[float, int]] = []
        self._cursor = 0
        self._seq0 = 0

    def start(self) -> None:
        """Restore the operator's switches and apply the commands asked while no flow ran, before the
        flow emits anything; then poll on a thread."""
        with open_store(self.db) as store:
            for pair in SWITCHES:
                last = store.ops.last_of(pair, states=("applied",))
                if last is not None:
                    self.control.apply(last, {})
            # commands already pending when we start are for us; older applied ones are history
            pending = store.ops.pending()
            self._cursor = pending[0]["id"] - 1 if pending else store.ops.max_id()
            self._seq0 = store.last_seq()
            self._poll(store)
        super().start()

    def run(self) -> None:
        store = open_store(self.db, wait_out="the flow's control loop")
        try:
            next_status = next_checkpoint = 0.0
            while not self._done.is_set():
                try:
                    self._poll(store)
                    now = time.monotonic()
                    if now >= next_status:
                        self.write_refresh_status(store, "running")
                        if self.resolve:
                            self.write_status(store, "running")
                        next_status = now + self.status_interval
                    if now >= next_checkpoint:
                        # PASSIVE: copies what no reader needs, never blocks the writers
                        store.checkpoint_wal()
                        next_checkpoint = now + self.checkpoint_interval
                except DatabaseError:  # e.g. locked past the busy timeout: try again next round
                    log.exception("control loop: polling commands or writing status failed")
                self._done.wait(self.poll_interval)
            self._poll(store)
        finally:
            store.close()

    def _poll(self, store: Store) -> None:
        ops = store.ops
        for row in ops.after(self._cursor):
            op_id, command, params, state = row["id"], row["command"], row["params"], row["state"]
            self._cursor = op_id
            if command not in COMMANDS:
                continue  # an operation for someone else (jobs, rules, ...)
            try:
                parsed = json.loads(params) if params else {}
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                result, effect = "rejected", f"params must be a JSON object, got {params!r}"
            else:
                result, effect = self.control.apply(command, parsed)
            if self.resolve and state == "pending":
                ops.resolve(op_id, result, effect)
            log.info("command %s #%d: %s (%s)", command, op_id, result, effect)

    def status_doc(self, store: Store, state: str) -> dict[str, Any]:
        c = self.control
        now = time.time()
        last_seq = store.last_seq()
        window = self._rate_window
        window.append((now, last_seq))
        while len(window) > 2 and now - window[0][0] > 10.0:
            window.pop(0)
        t0, s0 = window[0]
        rate = (last_seq - s0) / (now - t0) if now > t0 else 0.0
        cp = store.checkpoints.get(PROFILES_CHECKPOINT)
        lag = 0.0
        if cp < last_seq:
            recorded = store.first_recorded_after(cp)
            lag = max(0.0, now - recorded) if recorded is not None else 0.0
        doc: dict[str, Any] = {
            "state": state,
            "ingestion": "paused" if c.ingestion_paused else "running",
            "refresh": ("paused" if c.refresh_paused else "running") if c.refresh_attached else "off",
            "events_in": last_seq - self._seq0,
            "events_per_s": round(rate, 1),
            "last_seq": last_seq,
            "profiles_seq": cp,
            "lag_s": round(lag, 3),
            "dead_letters": store.dead_letter_count(),
            "started_at": c.started_at,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "workers": c.workers,
            "rate": c.rate,
            "delay": c.delay,
        }
        doc.update(self.refresh_doc() or self.cluster_refresh(store))
        return doc

    def refresh_doc(self) -> dict[str, Any] | None:
        """The refresh figures of this process, with who it is; None when no refresher runs here."""
        figures = self.control.refresh_status()
        if not figures:
            return None
        return {**figures, "refresh_process": self.process_id, "refresh_pid": os.getpid(),
                "refresh_host": socket.gethostname()}

    def write_refresh_status(self, store: Store, state: str) -> None:
        doc = self.refresh_doc()
        if doc is not None:
            with store.transaction():
                store.status.put(f"{REFRESH_COMPONENT}.{self.process_id}", {**doc, "refresh_state": state})

    def cluster_refresh(self, store: Store) -> dict[str, Any]:
        """The refresh figures another process of the cluster wrote, when one did lately (the newest)."""
        fresh_after = time.time() - max(3 * self.status_interval, 5.0)
        docs = [
            doc for name, doc in store.status.all().items()
            if name.startswith(f"{REFRESH_COMPONENT}.") and float(doc.get("updated_at") or 0) >= fresh_after
        ]
        if not docs:
            return {}
        newest = max(docs, key=lambda d: float(d["updated_at"]))
        return {k: v for k, v in newest.items() if k not in ("updated_at", "refresh_state")}

    def write_status(self, store: Store, state: str) -> dict[str, Any]:
        doc = self.status_doc(store, state)
        with store.transaction():
            store.status.put("dataflow", doc)
        if self.on_status:
            self.on_status(doc)
        return doc

    def finish(self) -> dict[str, Any] | None:
        """Stop polling and write the final "stopped" status."""
        self._done.set()
        if self.is_alive():
            self.join(timeout=30)
        with open_store(self.db) as store:
            self.write_refresh_status(store, "stopped")
            return self.write_status(store, "stopped") if self.resolve else None
