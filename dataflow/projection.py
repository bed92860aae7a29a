"""The keyed profile fold of the flow: events read from the log, partitioned by user, folded with
:func:`dataflow.profile.fold`, and flushed as profile documents to the projection sink.

Users are partitioned into a fixed number of shards (a stable CRC of the user id); the Bytewax key
is the shard. Keying by shard rather than by user keeps Bytewax's per-item cost (exchange, per-key
logic call) per batch instead of per event; each shard's state is the profiles of its users.

Every log batch reaches every shard (possibly with no events), so each shard knows how far the log
has been read; a flush carries that seq, and the sink advances the projection's checkpoint to the
lowest seq all shards have flushed.
"""

from __future__ import annotations

import math
import operator
import pickle
import time
import zlib
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Optional

from bytewax.operators import StatefulBatchLogic
from pydantic_core import to_json

from storage.events import Event

from .profile import ProfileState, fold_many
from .sources import LogBatch

#: share of the flow's time that writing profile documents may take before flushes space out
FLUSH_BUDGET = 0.1

#: (events of this shard in seq order, their seqs, the highest seq of the log batch they came from)
ShardBatch = tuple[list[Event], list[int], int]

# A snapshot holds each profile as the plain tuple of its fields (taken in C by attrgetter): pickling
# slotted dataclasses goes through a Python __getstate__/__setstate__ per object, twice as slow.
_FIELDS = tuple(f.name for f in fields(ProfileState))
_as_tuple = operator.attrgetter(*_FIELDS)
_user_of = operator.attrgetter("user_id")


@dataclass(slots=True)
class ProfileFlush:
    """Documents of the users a shard changed since its last flush, and the seq the shard has read to."""

    docs: list[tuple[str, str, int]]  # (user_id, document as JSON, last seq folded into it)
    upto: int


def shard_keys(shards: int) -> list[str]:
    return [f"s{k:03d}" for k in range(shards)]


def shard_of(user_id: str, shards: int) -> int:
    """Stable across processes and runs (``hash()`` of a str is salted per process)."""
    return zlib.crc32(user_id.encode()) % shards


class ShardSplitter:
    """``flat_map`` step: one log batch -> one (shard key, ShardBatch) per shard."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self.keys = shard_keys(shards)
        self._shard: dict[str, int] = {}  # user id -> shard, memoised (ids repeat constantly)

    def __call__(self, batch: LogBatch) -> list[tuple[str, ShardBatch]]:
        shards = self.shards
        events: list[list[Event]] = [[] for _ in range(shards)]
        seqs: list[list[int]] = [[] for _ in range(shards)]
        memo = self._shard
        for e, seq in zip(batch.events, batch.seqs):
            uid = e.user_id
            if uid is None:
                continue
            k = memo.get(uid)
            if k is None:
                k = memo[uid] = shard_of(uid, shards)
            events[k].append(e)
            seqs[k].append(seq)
        upto = batch.upto
        return [(key, (evs, sqs, upto)) for key, evs, sqs in zip(self.keys, events, seqs)]


class ProfileShardLogic(StatefulBatchLogic[ShardBatch, ProfileFlush, bytes]):
    """State of one shard: its users' :class:`ProfileState`, the users changed since the last flush,
    and the log position. Flushes at most every ``flush_interval`` seconds (less often when flushing
    would take more than :data:`FLUSH_BUDGET` of the time) and at the end of input."""

    def __init__(
        self,
        resume: bytes | None,
        flush_interval: float,
        *,
        loader: Callable[[list[str]], dict[str, ProfileState]] | None = None,
        resume_from: int = 0,
        shards: int = 1,
        clock: Callable[[], float] = time.time,
        snapshots: bool = True,
    ) -> None:
        self.profiles: dict[str, ProfileState] = {}
        self.dirty: set[str] = set()
        self.upto = 0
        self.reported = 0
        if resume:
            profiles, self.dirty, self.upto, self.reported = pickle.loads(resume)
            if isinstance(profiles, dict):  # a snapshot of an earlier version: the states themselves
                self.profiles = profiles
            else:
                self.profiles = {t[0]: ProfileState(*t) for t in profiles}
        self.snapshots = snapshots
        self.flush_interval = flush_interval
        self.loader = loader
        self.resume_from = resume_from
        #: user -> last seq already folded into the stored profile loaded, where that is at or past
        #: ``resume_from`` (a crashed run wrote it ahead of the checkpoint): its events up to there are skipped
        self.folded_upto: dict[str, int] = {}
        self.shards = shards
        self.clock = clock
        self.next_flush = clock() + flush_interval

    def on_batch(self, values: list[ShardBatch]) -> tuple[Iterable[ProfileFlush], bool]:
        profiles, dirty = self.profiles, self.dirty
        upto = self.upto
        if self.loader is not None:
            values = self._continue_stored(values)
        for events, seqs, batch_upto in values:
            fold_many(profiles, events, seqs)
            dirty.update(map(_user_of, events))  # type: ignore[arg-type]
            if batch_upto > upto:
                upto = batch_upto
        self.upto = upto
        if self.clock() >= self.next_flush:
            return self._flush(), StatefulBatchLogic.RETAIN
        return (), StatefulBatchLogic.RETAIN

    def _continue_stored(self, values: list[ShardBatch]) -> list[ShardBatch]:
        """Load the stored profiles of users met first, and drop the events already folded into them.

        A run killed after writing some profiles but before moving the checkpoint leaves those profiles
        ahead of it: continuing from the checkpoint must not fold their events again. A stored profile
        with ``last_seq`` L holds exactly its user's events up to L (profiles are written at flushes that
        cover every event up to them), so the events at or below L are the ones to skip."""
        profiles, upto = self.profiles, self.folded_upto
        missing = {e.user_id for events, _, _ in values for e in events if e.user_id not in profiles}
        if missing:
            loaded = self.loader(sorted(missing))  # type: ignore[arg-type, misc]
            profiles.update(loaded)
            upto.update((uid, p.last_seq) for uid, p in loaded.items() if p.last_seq >= self.resume_from)
        if not upto:
            return values
        out: list[ShardBatch] = []
        for events, seqs, batch_upto in values:
            keep = [i for i, (e, seq) in enumerate(zip(events, seqs)) if seq > upto.get(e.user_id, 0)]  # type: ignore[arg-type]
            out.append(([events[i] for i in keep], [seqs[i] for i in keep], batch_upto))
        return out

    def _flush(self) -> list[ProfileFlush]:
        start = self.clock()
        self.next_flush = start + self.flush_interval
        if not self.dirty and self.upto <= self.reported:
            return []
        profiles = self.profiles
        docs = []
        for uid in sorted(self.dirty):
            p = profiles[uid]
            # serialised here, once, by pydantic-core (several times faster than json.dumps for these)
            docs.append((uid, to_json(p.document()).decode(), p.last_seq))
        self.dirty = set()
        self.reported = self.upto
        # When every user changes between flushes (a busy stream), writing profiles costs the same
        # whatever the event rate: flush less often when this shard's share of it would exceed its
        # share of the flow's time budget for profile writes (the sink's upsert costs about half again).
        spent = (self.clock() - start) * 1.5 * self.shards
        self.next_flush = max(self.next_flush, start + spent / FLUSH_BUDGET)
        return [ProfileFlush(docs, self.upto)]

    def on_notify(self) -> tuple[Iterable[ProfileFlush], bool]:
        return self._flush(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[ProfileFlush], bool]:
        return self._flush(), StatefulBatchLogic.RETAIN

    def notify_at(self) -> Optional[datetime]:
        if math.isinf(self.flush_interval) or (not self.dirty and self.upto <= self.reported):
            return None
        return datetime.now(timezone.utc) + timedelta(seconds=max(0.0, self.next_flush - self.clock()))

    def snapshot(self) -> bytes:
        if not self.snapshots:  # no recovery (replay): Bytewax still asks at each epoch, and drops it
            return b""
        # With a loader, only the profiles not flushed yet: the others are in the store as they are here
        # (a flush is written within its epoch, before a resume can start from it), and a resumed run
        # loads them from there when it meets their users. Pickling every profile met, each epoch, took
        # a third of the flow's time at a million users.
        kept = self.profiles.values() if self.loader is None else (self.profiles[u] for u in self.dirty)
        # pickled right away: the state keeps changing after this call returns
        profiles = [_as_tuple(p) for p in kept]
        return pickle.dumps((profiles, self.dirty, self.upto, self.reported), protocol=pickle.HIGHEST_PROTOCOL)
