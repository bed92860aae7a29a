"""The append step: validated batches go into the event log, and the log comes out, in seq order.

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

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Optional

from bytewax.operators import StatefulBatchLogic

from storage.event_store import EventStore

from .control import tune_writer
from .sources import LogBatch, read_log
from .validate import Checked

#: the one key of the append step
LOG_KEY = "log"


class LogAppendLogic(StatefulBatchLogic[Checked, LogBatch, int]):
    def __init__(
        self,
        resume: int | None,
        db: Path,
        *,
        poll_interval: float = 0.5,
        page: int = 10_000,
        max_pages: int = 10,
        cache_mb: int = 128,
    ) -> None:
        self.store = EventStore(db)
        tune_writer(self.store, cache_mb)
        self.upto = resume or 0
        self.poll_interval = poll_interval
        self.page = page
        self.max_pages = max_pages  # per call, so a long catch-up does not hold everything in memory
        self._behind = False
        self._next_poll = time.monotonic() + poll_interval

    def on_batch(self, values: list[Checked]) -> tuple[Iterable[LogBatch], bool]:
        events = [e for c in values for e in c.events]
        if not events:
            return (), StatefulBatchLogic.RETAIN
        res = self.store.append(events)
        new = res.new
        if not self._behind and res.duplicates == 0 and new and new[0][0] == self.upto + 1:
            seqs = [s for s, _ in new]
            self.upto = seqs[-1]
            return [LogBatch(events, seqs, self.upto)], StatefulBatchLogic.RETAIN
        return self._catch_up(), StatefulBatchLogic.RETAIN

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
        self._next_poll = time.monotonic() + self.poll_interval
        return self._catch_up(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[LogBatch], bool]:
        out = self._catch_up()
        while self._behind:  # the input ended: take the rest of the log now
            out.extend(self._catch_up())
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> Optional[datetime]:
        wait = 0.0 if self._behind else max(0.0, self._next_poll - time.monotonic())
        return datetime.now(timezone.utc) + timedelta(seconds=wait)

    def snapshot(self) -> int:
        return self.upto
