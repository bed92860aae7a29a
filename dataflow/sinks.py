"""Bytewax sinks into the store: the profiles and rules projections, and the replay's graph columns.

Each worker opens its own connection (``build``/``build_part`` run on the worker's thread). Profile
upserts are idempotent (the same document for the same seq), so what Bytewax delivers again after a
resume changes nothing. (Dead letters are written by the append step, dataflow.log_writer.)
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import numpy as np

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from config.db_location import DbLocation
from scoring.rule_store import CHECKPOINT as RULES_CHECKPOINT
from scoring.rule_store import RULE_EVENT_TYPES, apply_rule_event
from storage import open_store, retry_transient
from storage.events import Event

from .control import PROFILES_CHECKPOINT, tune_writer
from .projection import ProfileFlush
from .sources import LogBatch



#: shard key -> highest seq the shard has flushed
ShardProgress = dict[str, int]


class _ProfilePartition(StatefulSinkPartition[tuple[str, ProfileFlush], ShardProgress]):
    def __init__(
        self,
        db: DbLocation,
        shard_count: int,
        progress: ShardProgress,
        final_seq: int | None,
        on_write: Callable[[int], None] | None,
        cache_mb: int,
    ) -> None:
        self.store = open_store(db, wait_out="the profile sink")
        tune_writer(self.store, cache_mb)
        self.shard_count = shard_count
        self.progress = progress
        self.final_seq = final_seq
        self.on_write = on_write

    def write_batch(self, values: list[tuple[str, ProfileFlush]]) -> None:
        rows = [doc for _, flush in values for doc in flush.docs]
        # a server outage is waited out; the same upserts and checkpoint again are harmless
        retry_transient(lambda: self._write(rows, values), "the profile sink")
        if self.on_write is not None:
            self.on_write(len(rows))

    def _write(self, rows: list[tuple[str, str, int]], values: list[tuple[str, ProfileFlush]]) -> None:
        with self.store.transaction():
            if rows:
                self.store.profiles.upsert_many(rows)
            for shard, flush in values:
                if flush.upto > self.progress.get(shard, 0):
                    self.progress[shard] = flush.upto
            if self.final_seq is None and len(self.progress) >= self.shard_count:
                # every shard has written all it folded up to this seq: the projection is complete there
                self.store.checkpoints.set(PROFILES_CHECKPOINT, min(self.progress.values()))

    def snapshot(self) -> ShardProgress:
        return dict(self.progress)

    def close(self) -> None:
        if self.final_seq is not None:
            self.store.checkpoints.set(PROFILES_CHECKPOINT, self.final_seq)
        self.store.close()


class ProfileSink(FixedPartitionedSink[tuple[str, ProfileFlush], ShardProgress]):
    """Upserts profile documents, batched, with the ``profiles`` checkpoint in the same transaction.

    One partition, so the checkpoint can be the minimum over all shards' progress. ``final_seq`` (replay)
    sets the checkpoint once at the end instead."""

    PART = "profiles"

    def __init__(
        self,
        db: DbLocation,
        shard_count: int,
        *,
        final_seq: int | None = None,
        on_write: Callable[[int], None] | None = None,
        cache_mb: int = 128,
    ) -> None:
        self.db = db
        self.shard_count = shard_count
        self.final_seq = final_seq
        self.on_write = on_write
        self.cache_mb = cache_mb

    def list_parts(self) -> list[str]:
        return [self.PART]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[ShardProgress]) -> _ProfilePartition:
        return _ProfilePartition(
            self.db, self.shard_count, dict(resume_state or {}), self.final_seq, self.on_write, self.cache_mb
        )


#: (seq, rule event) of rule.created / rule.updated / rule.deleted
RuleChange = tuple[int, Event]
RULE_TYPES = frozenset(RULE_EVENT_TYPES)


class _RulesPartition(StatefulSinkPartition[RuleChange, None]):
    def __init__(self, db: DbLocation, in_order: bool) -> None:
        self.store = open_store(db, wait_out="the rules sink")
        self.in_order = in_order
        self.pending: list[RuleChange] = []

    def write_batch(self, values: list[RuleChange]) -> None:
        if self.in_order:
            self._apply(values)
        else:
            self.pending.extend(values)

    def _apply(self, changes: list[RuleChange]) -> None:
        retry_transient(lambda: self._apply_once(changes), "the rules sink")

    def _apply_once(self, changes: list[RuleChange]) -> None:
        with self.store.transaction():
            # The rule store applies its own changes as it appends them; only what the projection has
            # not applied yet (events appended by others, a replay) goes in, so it never steps back.
            applied = self.store.checkpoints.get(RULES_CHECKPOINT)
            for seq, e in changes:
                if seq > applied:
                    apply_rule_event(self.store, e, seq)
                    applied = seq

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        if self.pending:  # replay read seq ranges in parallel: apply in log order at the end
            self._apply(sorted(self.pending, key=lambda c: c[0]))
        self.store.close()


class RulesSink(FixedPartitionedSink[RuleChange, None]):
    """The ``rules`` projection from ``rule.*`` events, with :func:`scoring.rule_store.apply_rule_event`
    (the rule store's own fold). One partition: changes apply in log order.

    ``in_order=False`` (a replay over parallel seq ranges) keeps the changes and applies them sorted by
    seq when the input ends; rule changes are rare, so that is little to hold."""

    PART = "rules"

    def __init__(self, db: DbLocation, *, in_order: bool = True) -> None:
        self.db = db
        self.in_order = in_order

    def list_parts(self) -> list[str]:
        return [self.PART]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _RulesPartition:
        return _RulesPartition(self.db, self.in_order)


class _GraphColumnsPartition(StatefulSinkPartition[LogBatch, None]):
    def __init__(self, db: DbLocation, after: int) -> None:
        self.store = open_store(db, wait_out="the graph columns sink")
        self.after = after

    def write_batch(self, values: list[LogBatch]) -> None:
        for batch in values:
            retry_transient(partial(self._extend, batch), "the graph columns sink")
            self.after = batch.upto

    def _extend(self, batch: LogBatch) -> None:
        ev = batch.events
        self.store.graph_columns.extend(self.after, batch.upto, np.asarray(batch.seqs, np.int64), [e.type for e in ev],
                                        [e.user_id for e in ev], [e.target_id for e in ev], [e.ts for e in ev])

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self.store.close()


class GraphColumnsSink(FixedPartitionedSink[LogBatch, None]):
    """The graph columns (``storage.graph_columns``) coded from the batches a replay reads from seq 1,
    in seq order (one partition), so the log is not read a second time to rebuild them."""

    PART = "graph_columns"

    def __init__(self, db: DbLocation, after: int = 0) -> None:
        self.db = db
        self.after = after

    def list_parts(self) -> list[str]:
        return [self.PART]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _GraphColumnsPartition:
        return _GraphColumnsPartition(self.db, self.after)
