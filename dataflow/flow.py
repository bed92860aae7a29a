"""The Bytewax dataflows: the live flow and the replay of the log. Both fold profiles with the very
same steps (:func:`add_profile_projection`).

Live flow::

    ingest (mock | jsonl | kafka | any source of batches) -> event_log (validate + append in the log writer
        process, refused items to dead_letters in the same transaction; emits the log in seq order)
        event_log -+-> shard by user -> fold_profiles (stateful) -> profiles (sink, with checkpoint)
                   +-> rule_changes -> rules (sink)
                   +-> the refresh step, when attached (the same Stream[LogBatch])

The projection consumes the log as the append step hands it on (see :mod:`dataflow.event_log`):
every seq once, in order, whoever appended it; replay is the same projection over a read of the log.

``python -m bytewax.run "dataflow.flow:get_flow()"`` runs the same live flow as ``ups dataflow``,
configured from ``UPS_*`` environment variables (give ``-r``/``-s`` for recovery there; ``ups
dataflow`` does it for you).
"""

from __future__ import annotations

import atexit
import operator
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource

from config.db_location import DbLocation
from storage import open_store
from config.settings import Settings

from scoring.rule_store import CHECKPOINT as RULES_CHECKPOINT
from scoring.rule_store import RULE_EVENT_TYPES

from .control import PROFILES_CHECKPOINT, FlowControl
from .event_log import LOG_KEY, LogAppendLogic
from .generator import GeneratorConfig, MockGenerator
from .kafka_source import KafkaIngest
from .profile import ProfileState
from .projection import ProfileShardLogic, ShardSplitter
from .sinks import RULE_TYPES, GraphColumnsSink, ProfileSink, RuleChange, RulesSink
from .sources import JsonlSource, LogBatch, LogSource, MockSource

_type_of = operator.attrgetter("type")

#: signature of the hook that attaches the embedding-refresh branch (``dataflow.refresh_step``)
AttachRefresh = Callable[[Stream[LogBatch], FlowControl], None]


def add_profile_projection(
    log_batches: Stream[LogBatch],
    db: DbLocation,
    *,
    shards: int,
    flush_interval: float,
    final_seq: int | None = None,
    on_events: Callable[[int], None] | None = None,
    on_write: Callable[[int], None] | None = None,
    loader: Callable[[list[str]], dict[str, ProfileState]] | None = None,
    resume_from: int = 0,
    cache_mb: int = 128,
    snapshots: bool = True,
) -> None:
    """log batches -> shard by user -> fold -> profiles sink (+ checkpoint); ``snapshots=False`` when
    the flow runs without recovery, so the fold's state is not pickled for nothing. ``loader`` gives the
    stored profiles of users met first when continuing a projection from seq ``resume_from``."""
    splitter = ShardSplitter(shards)
    if on_events is not None:
        count = on_events

        def split(batch: LogBatch) -> list[Any]:
            count(len(batch.events))
            return splitter(batch)

        sharded = op.flat_map("shard_by_user", log_batches, split)
    else:
        sharded = op.flat_map("shard_by_user", log_batches, splitter)
    folded = op.stateful_batch(
        "fold_profiles",
        sharded,
        lambda resume: ProfileShardLogic(
            resume, flush_interval, loader=loader, resume_from=resume_from, shards=shards, snapshots=snapshots
        ),
    )
    # one sink partition sees every shard's progress (the checkpoint is their minimum)
    to_sink = op.map("to_profiles_sink", folded, lambda kv: (ProfileSink.PART, kv))
    op.output("profiles", to_sink, ProfileSink(db, shards, final_seq=final_seq, on_write=on_write, cache_mb=cache_mb))


def add_rules_projection(log_batches: Stream[LogBatch], db: DbLocation, *, in_order: bool) -> None:
    """rule.* events -> the rules projection."""

    def rule_changes(batch: LogBatch) -> list[tuple[str, RuleChange]]:
        # rule events are rare: the usual batch is ruled out by one pass in C over the types
        if RULE_TYPES.isdisjoint(map(_type_of, batch.events)):
            return []
        return [
            (RulesSink.PART, (seq, e)) for e, seq in zip(batch.events, batch.seqs) if e.type in RULE_TYPES
        ]

    op.output("rules", op.flat_map("rule_changes", log_batches, rule_changes), RulesSink(db, in_order=in_order))


def build_live_flow(
    settings: Settings,
    ingest: FixedPartitionedSource[Any, Any],
    control: FlowControl,
    *,
    attach_refresh: AttachRefresh | None = None,
    flow_id: str = "ups_live",
) -> Dataflow:
    """The live flow over ``ingest`` (items: :class:`~dataflow.sources.IngestBatch` or lists of raw events).

    ``attach_refresh(log_batches, control)`` plugs the embedding-refresh branch onto the log's stream
    (one :class:`~dataflow.sources.LogBatch` per batch appended, in seq order)."""
    db = settings.db
    flow = Dataflow(flow_id)
    raw = op.input("ingest", flow, ingest)
    # validation happens in the append step's writer process, in the transaction that appends the
    # valid events and keeps the refused ones as dead letters (dataflow.log_writer)
    to_log = op.key_on("to_log", raw, lambda _: LOG_KEY)
    poll, cache = settings.log_poll_interval, settings.sqlite_cache_mb
    # without a recovery snapshot the log is read from where the projections already hold it, not from
    # seq 1: a store folded by `ups init` (21.6M events at 1M users) would otherwise be folded again,
    # for many minutes, its profiles overwritten meanwhile by partial ones from scratch
    start = projected_upto(db)
    appended = op.stateful_batch(
        "event_log", to_log,
        lambda upto: LogAppendLogic(start if upto is None else upto, db, poll_interval=poll, cache_mb=cache),
    )
    log_batches = op.key_rm("log", appended)
    add_profile_projection(
        log_batches,
        db,
        shards=settings.profile_shards,
        flush_interval=settings.flush_interval,
        cache_mb=settings.sqlite_cache_mb,
        # users met first start from their stored profile, whose events are skipped (resume_from 0:
        # whatever seq the log resumes at, a stored profile holds exactly its events up to its last_seq)
        loader=ProfileLoader(db),
    )
    add_rules_projection(log_batches, db, in_order=True)
    if attach_refresh is not None:
        control.refresh_attached = True
        attach_refresh(log_batches, control)
    return flow


def projected_upto(db: DbLocation) -> int:
    """The seq up to which the store's profiles and rules projections hold the log: the profiles'
    checkpoint, or the rules' where a rule event past the rules' checkpoint waits to be applied."""
    with open_store(db, wait_out="the flow's start") as store:
        upto = store.checkpoints.get(PROFILES_CHECKPOINT)
        rules = store.checkpoints.get(RULES_CHECKPOINT)
        if store.last_seq_of_types(RULE_EVENT_TYPES) > rules:
            upto = min(upto, rules)
    return upto


def mock_source(settings: Settings, control: FlowControl, max_events: int | None = None) -> MockSource:
    gen = MockGenerator(GeneratorConfig.from_settings(settings))
    return MockSource(
        gen, control, max_events=max_events, batch_size=settings.batch_size, base_ts=settings.live_base_ts,
        db=settings.db,
    )


def jsonl_source(settings: Settings, control: FlowControl, path: Path, follow: bool = False) -> JsonlSource:
    return JsonlSource(path, control, batch_size=settings.batch_size, follow=follow)


def kafka_source(settings: Settings, control: FlowControl) -> KafkaIngest:
    brokers = [b.strip() for b in settings.kafka_brokers.split(",") if b.strip()]
    return KafkaIngest(brokers, [settings.kafka_topic], control, batch_size=settings.batch_size)


class ProfileLoader:
    """Loads stored profiles of users a flow meets first (the live flow, a replay continuing from a seq).
    One read connection per worker thread, kept open: the live flow calls it for every shard of every
    batch, and opening a store each time was a sixth of the flow's time at a million users."""

    def __init__(self, db: DbLocation) -> None:
        self.db = db
        self._local = threading.local()

    def __call__(self, user_ids: list[str]) -> dict[str, ProfileState]:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = open_store(self.db, readonly=True, wait_out="the profile loader")
        seqs = store.profiles.last_seqs(user_ids)
        return {
            uid: ProfileState.from_document(doc, seqs.get(uid, 0))
            for uid, doc in store.profiles.get_many(user_ids).items()
        }


def build_replay_flow(
    settings: Settings,
    *,
    source_db: DbLocation,
    into: DbLocation,
    first: int,
    last: int,
    parts: int,
    on_events: Callable[[int], None] | None = None,
) -> Dataflow:
    """Replay of ``first..last`` of ``source_db`` (seq ranges as partitions) into ``into``'s projections
    (and, from seq 1 into the log's own store, its graph columns)."""
    flow = Dataflow("ups_replay")
    src = LogSource(source_db, first, last, parts, batch_size=max(settings.batch_size, 10_000))
    log_batches = op.input("log", flow, src)
    add_profile_projection(
        log_batches,
        into,
        shards=settings.profile_shards,
        flush_interval=float("inf"),
        final_seq=last,
        on_events=on_events,
        # continuing from a seq: users met first start from their stored profile
        loader=ProfileLoader(into) if first > 1 else None,
        resume_from=first,
        cache_mb=settings.sqlite_cache_mb,
        snapshots=False,  # replay runs without recovery (runner.replay)
    )
    add_rules_projection(log_batches, into, in_order=parts == 1)
    if first == 1 and into == source_db and parts == 1:
        # the log's own graph columns, coded from the batches read here (the caller cleared them first;
        # seq ranges read in parallel are coded after the flow instead, in one ordered pass)
        to_sink = op.map("to_graph_columns", log_batches, lambda b: (GraphColumnsSink.PART, b))
        op.output("graph_columns", to_sink, GraphColumnsSink(into))
    return flow


def get_flow(
    source: str = "mock", max_events: int | None = None, path: str | None = None, follow: bool = False
) -> Dataflow:
    """Entry point for ``python -m bytewax.run "dataflow.flow:get_flow()"``: the flow ``ups dataflow``
    runs, configured from ``UPS_*`` (the refresh branch too, when ``UPS_REFRESH_IN_FLOW``). Recovery is
    bytewax.run's ``-r``/``-s``; ``ups dataflow`` sets it up for you.

    Starts the control thread (commands, status) for this process as a side effect."""
    from .control import ControlLoop
    from .refresh_step import refresh_branch
    from .flow_lock import FlowLock
    from .runner import make_ingest

    settings = Settings()
    process_id, addresses = _bytewax_run_cluster()
    lock = FlowLock(settings.state_dir, settings.db, process_id=process_id, addresses=addresses)
    lock.acquire()  # held until the process ends (released after the final status below)
    atexit.register(lock.release)
    control = FlowControl(rate=settings.live_rate, delay=settings.live_delay)
    ingest = make_ingest(
        settings, control, source, path=Path(path) if path else None, follow=follow, max_events=max_events
    )
    flow = build_live_flow(settings, ingest, control, attach_refresh=refresh_branch(settings))
    control_loop = ControlLoop(
        settings.db, control, status_interval=settings.status_interval, poll_interval=settings.command_poll_interval,
        process_id=process_id or 0,
    )
    control_loop.start()
    atexit.register(control_loop.finish)  # the status row says "stopped" when the process ends
    return flow


def _bytewax_run_cluster() -> tuple[int | None, list[str] | None]:
    """This process's ``-i`` and ``-a`` when ``python -m bytewax.run`` runs it (its own parser reads its
    flags, env vars and host file; Bytewax 0.21 is the last release, so the private helper stays)."""
    import bytewax.run as bytewax_run

    if not sys.argv or Path(sys.argv[0]).resolve() != Path(bytewax_run.__file__).resolve():
        return None, None
    args = bytewax_run._parse_args()
    addresses = [a for a in args.addresses.split(";") if a] if args.addresses else None
    return args.process_id, addresses
