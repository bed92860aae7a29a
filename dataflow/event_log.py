"""The append step: input batches are validated into the event log (refused items into dead letters),
and the log comes out, in seq order. The validation and the SQLite work run in a child process
(:mod:`dataflow.log_writer`) while the flow goes on with earlier batches.

It is a stateful step (one key, so one writer: SQLite has one anyway) rather than an ``op.output``
sink because the projection downstream must see *the log*, not the input: every seq exactly once and
in order, including events other processes appended (``ups generate``, the API) and events a resumed
run re-emits, which the append skips as already there.

Its state is ``upto``: every seq at or below it has been passed downstream. After an append, when the
new seqs continue ``upto`` exactly (the common case), the batch goes on from memory; otherwise (someone
else appended, duplicates after a resume, a fresh start on an existing log) the gap is read back from
the log. A timer reads the log while no input arrives, so other writers' events are folded too.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Optional

from bytewax.operators import StatefulBatchLogic

from config.db_location import DbLocation
from storage import open_store

from .log_writer import Appended, LogWriter
from .sources import IngestBatch, LogBatch, read_log

log = logging.getLogger(__name__)

#: the one key of the append step
LOG_KEY = "log"
#: batches the writer process may have in hand while the flow goes on (it absorbs the writer's
#: stalls, e.g. while the profiles sink holds SQLite's write lock)
_IN_FLIGHT = 2
#: how soon to look again for the result of a batch still being inserted when no input comes
_RESULT_POLL = timedelta(milliseconds=2)


class LogAppendLogic(StatefulBatchLogic[IngestBatch | list[Any], LogBatch, int]):
    def __init__(
        self,
        resume: int | None,
        db: DbLocation,
        *,
        poll_interval: float = 0.5,
        page: int = 10_000,
        max_pages: int = 10,
        cache_mb: int = 128,
    ) -> None:
        self.db = db
        self.cache_mb = cache_mb
        self.store = open_store(db, wait_out="the flow's log reader")  # reads back gaps; validation and appends happen in the writer process
        self.writer: LogWriter | None = None
        self.upto = resume or 0
        self.poll_interval = poll_interval
        self.page = page
        self.max_pages = max_pages  # per call, so a long catch-up does not hold everything in memory
        self._behind = False
        self._next_poll = time.monotonic() + poll_interval
        #: appended (committed), not passed on yet: what a snapshot waited for
        self._done: deque[Appended] = deque()

    def on_batch(self, values: list[IngestBatch | list[Any]]) -> tuple[Iterable[LogBatch], bool]:
        for batch in values:
            if self.writer is None:
                self.writer = LogWriter(self.db, self.cache_mb)
            self.writer.send(batch)
        # the batch just sent is validated and inserted while the flow folds the ones before it
        return self._collect(wait_all=False), StatefulBatchLogic.RETAIN

    def _collect(self, *, wait_all: bool) -> list[LogBatch]:
        """Take the writer's results (all of them, or those ready and any beyond ``_IN_FLIGHT``) and
        pass their batches on, in seq order."""
        w = self.writer
        while w is not None and w.in_flight and (wait_all or w.in_flight > _IN_FLIGHT or w.ready()):
            self._done.append(w.receive())
        out: list[LogBatch] = []
        while self._done:
            out.extend(self._passed_on(self._done.popleft()))
        return out

    def _passed_on(self, done: Appended) -> list[LogBatch]:
        if done.rejected:
            log.warning("%d invalid event(s) from %s, first: %s", done.rejected, done.origin, done.first_reason)
        events, res = done.events, done.result
        new = res.new
        if not self._behind and res.duplicates == 0 and new and new[0][0] == self.upto + 1:
            # the log continues exactly where we are: hand the batch on from memory
            seqs = [s for s, _ in new]
            self.upto = seqs[-1]
            return [LogBatch(events, seqs, self.upto)]
        if not self._behind and new and new[-1][0] <= self.upto:
            return []  # a catch-up has already read these back from the log
        # someone else appended, duplicates after a resume, a fresh start on an existing log
        return self._catch_up()

    def _catch_up(self) -> list[LogBatch]:
        out: list[LogBatch] = []
        for _ in range(self.max_pages):
            batch = read_log(self.store, self.upto + 1, 2**62, self.page)
            if batch is None:
                self._behind = False
                return out
            self.upto = batch.upto
            out.append(batch)
        self._behind = True  # more to read: continue at once from on_notify
        return out

    def on_notify(self) -> tuple[Iterable[LogBatch], bool]:
        out = self._collect(wait_all=False)
        if self._behind or time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.poll_interval
            out.extend(self._catch_up())
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[LogBatch], bool]:
        out = self._collect(wait_all=True)
        out.extend(self._catch_up())
        while self._behind:  # the input ended: take the rest of the log now
            out.extend(self._catch_up())
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> Optional[datetime]:
        now = datetime.now(timezone.utc)
        if self._behind or self._done:
            return now
        if self.writer is not None and self.writer.in_flight:
            return now + _RESULT_POLL  # pass the batch on soon after it is in, even if no input follows
        return now + timedelta(seconds=max(0.0, self._next_poll - time.monotonic()))

    def snapshot(self) -> int:
        # Everything sent must be in the log before the sources' positions past it are saved; it is
        # passed on at the next call (and read back from the log after a resume from this snapshot).
        w = self.writer
        while w is not None and w.in_flight:
            self._done.append(w.receive())
        return self.upto
