"""Running the flows as a process: the store's lock, recovery state, signals, control thread, worker count; and replay."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

from bytewax.inputs import FixedPartitionedSource
from bytewax.run import cli_main
from bytewax.testing import run_main

from config.db_location import DbLocation
from config.settings import Settings
from scoring.rule_store import CHECKPOINT as RULES_CHECKPOINT
from storage import open_store, parse_db, store_exists

from .collector import collector_for_throughput
from .control import PROFILES_CHECKPOINT, ControlLoop, FlowControl, record_failure
from .errors import FlowConfigError
from .flow import (
    AttachRefresh,
    build_live_flow,
    build_replay_flow,
    jsonl_source,
    kafka_source,
    mock_source,
)
from .flow_lock import FlowLock, FlowLocked
from .kafka_source import KafkaUnavailable
from .recovery_dir import ensure_recovery
from .recovery_dir import reset_recovery as reset_recovery_dir

log = logging.getLogger(__name__)


@contextmanager
def _signals_stop(control: FlowControl) -> Iterator[None]:
    """SIGINT/SIGTERM end the sources; the flow then finishes cleanly (sinks flushed, state saved)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if control.stopping:  # a second signal: give up at once
            raise KeyboardInterrupt
        control.request_stop(f"by signal {signal.Signals(signum).name}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@dataclass
class RunSummary:
    events_in: int
    seconds: float
    last_seq: int
    profiles_seq: int
    dead_letters: int
    status: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.events_in / self.seconds if self.seconds > 0 else 0.0


@contextmanager
def holding_store(
    settings: Settings,
    db: DbLocation | None = None,
    *,
    role: str = "dataflow",
    process_id: int | None = None,
    addresses: list[str] | None = None,
) -> Iterator[FlowLock]:
    """Hold ``db``'s writer lock (default: the settings' database) for the block; refused with a
    :class:`FlowConfigError` naming the holder while another flow or replay runs there (two would fold
    the log twice)."""
    db = parse_db(db) if db is not None else settings.db
    lock = FlowLock(
        settings.model_copy(update={"db": db}).state_dir, db, role=role, process_id=process_id, addresses=addresses
    )
    try:
        lock.acquire()
    except FlowLocked as err:
        raise FlowConfigError(str(err)) from None
    try:
        yield lock
    finally:
        lock.release()


@contextmanager
def _failure_recorded(db: DbLocation, speaks: bool) -> Iterator[None]:
    """A run that fails leaves the status row saying so, and why (``speaks``: process 0 of a cluster)."""
    try:
        yield
    except Exception as err:
        if speaks:
            record_failure(db, str(err) or type(err).__name__, pid=os.getpid())
        raise


def make_ingest(
    settings: Settings,
    control: FlowControl,
    source: str = "mock",
    *,
    path: Path | None = None,
    follow: bool = False,
    max_events: int | None = None,
) -> FixedPartitionedSource[Any, Any]:
    """The live flow's input: the mock stream (``max_events`` makes it finite), a JSON-lines file or a
    Kafka topic (``settings.kafka_brokers``/``kafka_topic``; checked here so a missing broker or topic
    is a clear error, not a flow that waits)."""
    if source == "mock":
        return mock_source(settings, control, max_events)
    if source == "jsonl":
        if path is None:
            raise FlowConfigError("--source jsonl needs --path FILE")
        if not Path(path).is_file():
            raise FlowConfigError(f"--path {path}: no such file")
        return jsonl_source(settings, control, Path(path), follow)
    if source == "kafka":
        if not settings.kafka_brokers:
            raise FlowConfigError("--source kafka needs --brokers HOST:PORT (or UPS_KAFKA_BROKERS)")
        ingest = kafka_source(settings, control)
        try:
            ingest.check()
        except KafkaUnavailable as err:
            raise FlowConfigError(str(err)) from None
        return ingest
    raise FlowConfigError(f"unknown source {source!r}; use mock, jsonl or kafka")


def run_dataflow(
    settings: Settings,
    *,
    source: str = "mock",
    path: Path | None = None,
    follow: bool = False,
    workers: int = 1,
    max_events: int | None = None,
    process_id: int | None = None,
    addresses: list[str] | None = None,
    attach_refresh: AttachRefresh | None = None,
    ingest: FixedPartitionedSource[Any, Any] | None = None,
    control: FlowControl | None = None,
    on_status: Callable[[dict[str, Any]], None] | None = None,
    reset_recovery: bool = False,
) -> RunSummary:
    """Run the live flow until its input ends, a ``shutdown`` command, or SIGINT/SIGTERM; the whole
    run holds the store's writer lock (:mod:`dataflow.flow_lock`). ``reset_recovery`` sets the recovery
    state aside first (:func:`dataflow.recovery_dir.reset_recovery`)."""
    with (
        holding_store(settings, process_id=process_id, addresses=addresses),
        _failure_recorded(settings.db, not process_id),
    ):
        control = control or FlowControl(rate=settings.live_rate, delay=settings.live_delay)
        control.workers = workers * (len(addresses) if addresses else 1)
        if ingest is None:
            ingest = make_ingest(settings, control, source, path=path, follow=follow, max_events=max_events)
        if reset_recovery and (aside := reset_recovery_dir(settings)) is not None:
            log.warning("recovery state set aside in %s; the flow's state is rebuilt from the event log", aside)
        recovery = (
            ensure_recovery(settings, process_id=process_id or 0, processes=len(addresses) if addresses else 1)
            if settings.recovery else None
        )
        flow = build_live_flow(settings, ingest, control, attach_refresh=attach_refresh)
        with open_store(settings.db) as store:
            if not process_id:
                # a log written before the graph columns (or past one that stopped them) is coded once
                # here; the flow's appends keep them up to date from then on
                store.graph_columns.catch_up()
                store.graph_columns.compact()  # the small blocks of the last run's few-event appends
            seq0 = store.last_seq()
        control_loop = ControlLoop(
            settings.db,
            control,
            status_interval=settings.status_interval,
            poll_interval=settings.command_poll_interval,
            process_id=process_id or 0,
            on_status=on_status,
        )
        t0 = time.perf_counter()
        # the stop handlers go in before the control loop reports "running": a SIGTERM sent to a flow
        # that says it runs always ends it cleanly
        with _signals_stop(control), collector_for_throughput():
            control_loop.start()
            try:
                cli_main(
                    flow,
                    workers_per_process=workers,
                    process_id=process_id,
                    addresses=addresses,
                    epoch_interval=timedelta(seconds=settings.snapshot_interval),
                    recovery_config=recovery,
                )
            finally:
                status = control_loop.finish() or {}
        seconds = time.perf_counter() - t0
        with open_store(settings.db) as store:
            return RunSummary(
                events_in=store.last_seq() - seq0,
                seconds=seconds,
                last_seq=store.last_seq(),
                profiles_seq=store.checkpoints.get(PROFILES_CHECKPOINT),
                dead_letters=store.dead_letter_count(),
                status=status,
            )


# ------------------------------------------------------------------------------------------ replay


@dataclass
class ReplaySummary:
    first: int
    last: int
    events: int
    profiles: int
    seconds: float
    into: DbLocation

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def replay(
    settings: Settings,
    *,
    from_seq: int = 1,
    to_seq: int | None = None,
    into: DbLocation | str | None = None,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Rebuild the profiles and rules projections from the log (``from_seq..to_seq``) into ``into``
    (default: the database itself). From seq 1 the projection is rebuilt from nothing; from a later seq it continues
    a projection whose checkpoint is ``from_seq - 1``."""
    source_db = settings.db
    if not store_exists(source_db):
        raise FlowConfigError(f"no database at {source_db}")
    target = parse_db(into) if into is not None else source_db
    with open_store(source_db, readonly=True) as store:
        last_seq = store.last_seq()
    last = last_seq if to_seq is None else min(to_seq, last_seq)
    if from_seq < 1:
        raise FlowConfigError(f"--from-seq must be at least 1, got {from_seq}")
    if to_seq is not None and to_seq < from_seq:
        raise FlowConfigError(f"--to-seq {to_seq} is before --from-seq {from_seq}")
    with holding_store(settings, target, role="replay"):
        return _replay_locked(settings, source_db, target, from_seq, last, workers, progress)


def _replay_locked(
    settings: Settings,
    source_db: DbLocation,
    target: DbLocation,
    from_seq: int,
    last: int,
    workers: int,
    progress: Callable[[int], None] | None,
) -> ReplaySummary:
    with open_store(target) as store, store.transaction():
        cp = store.checkpoints.get(PROFILES_CHECKPOINT)
        if from_seq == 1:
            store.profiles.clear()
            store.rules.clear()
            store.checkpoints.set(PROFILES_CHECKPOINT, 0)
            store.checkpoints.delete(RULES_CHECKPOINT)
            if target == source_db:
                store.graph_columns.clear()  # the replay flow codes them again as it reads the log
        elif cp != from_seq - 1:
            raise FlowConfigError(
                f"the profiles in {target} are at seq {cp:,}; replay --from-seq {cp + 1} continues them, "
                "--from-seq 1 rebuilds them"
            )
    flow = build_replay_flow(
        settings, source_db=source_db, into=target, first=from_seq, last=last, parts=workers, on_events=progress
    )
    t0 = time.perf_counter()
    with collector_for_throughput():
        if workers == 1:
            run_main(flow)
        else:
            cli_main(flow, workers_per_process=workers)
    with open_store(target) as store:
        if from_seq == 1 and target == source_db:
            # the graph columns are the log's own (a store elsewhere holds only projections of this log):
            # what the flow did not code (seq ranges read in parallel, events appended meanwhile) is coded here
            store.graph_columns.catch_up()
        n = store.profiles.count()
    seconds = time.perf_counter() - t0
    return ReplaySummary(from_seq, last, max(0, last - from_seq + 1), int(n), seconds, target)
