"""Bytewax sources: the mock live stream, a JSON-lines file, and the event log itself (tail or seq ranges).

All are ``FixedPartitionedSource``s whose partition state is a small cursor, so Bytewax recovery
resumes each one where its last snapshot left it. Every item is one batch (a list), which keeps
Bytewax's per-item overhead off the per-event path.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from config.db_location import DbLocation
from storage import store_exists
from storage import Store, open_store
from storage.events import Event

from .control import FlowControl
from .generator_config import LIVE_CHUNK

if TYPE_CHECKING:  # the log writer process imports this module; Faker and the generator stay out of it
    from .generator import MockGenerator

_IDLE = timedelta(milliseconds=50)


def _utc_in(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=max(0.0, seconds))


@dataclass(slots=True)
class IngestBatch:
    """Raw, not yet validated input: ``items`` are dicts, JSON text or Events; ``origin`` names the
    source (``mock``, ``jsonl:<path>``, ``kafka:<topic>/<partition>``) and ``lines`` the position of
    each item in it, if it has one: ``unit`` says what the numbers are (file lines, Kafka offsets)."""

    origin: str
    items: list[Any]
    lines: list[int] | None = None
    unit: str = "line"


@dataclass(slots=True)
class LogBatch:
    """Events of the log in seq order with their seqs; ``upto`` is the highest seq this batch covers
    (every event at or below it, of this partition, has been in this or an earlier batch)."""

    events: list[Event]
    seqs: list[int]
    upto: int


# ---------------------------------------------------------------------------------- mock live stream


@dataclass(frozen=True, slots=True)
class MockCursor:
    """Resume state of the mock stream: the next index to emit and the time base of its events.

    ``MockGenerator.live`` is pure per index, so an event emitted again after a crash is the very one
    already appended (and the append ignores it)."""

    next_index: int
    base_ts: float
    nominal_rate: float

    def ts_of(self, index: int) -> float:
        return self.base_ts + index / self.nominal_rate


class _MockPartition(StatefulSourcePartition[IngestBatch, MockCursor]):
    def __init__(
        self,
        gen: MockGenerator,
        control: FlowControl,
        cursor: MockCursor,
        max_events: int | None,
        batch_size: int,
    ) -> None:
        self.gen = gen
        self.control = control
        self.cursor = cursor
        self.max_events = max_events
        self.batch_size = batch_size
        self._anchor: tuple[float, int] | None = None  # (wall time, index) pacing restarts from
        self._awake: datetime | None = None
        self._chunk: tuple[int, float, float, list[Event]] | None = None

    def _events(self, start: int, n: int) -> list[Event]:
        c = self.cursor
        out: list[Event] = []
        i = start
        while len(out) < n:
            chunk, skip = divmod(i, LIVE_CHUNK)
            cached = self._chunk
            if cached is None or cached[:3] != (chunk, c.base_ts, c.nominal_rate):
                cached = (chunk, c.base_ts, c.nominal_rate, self.gen.live_chunk(chunk, c.base_ts, c.nominal_rate))
                self._chunk = cached
            take = cached[3][skip : skip + n - len(out)]
            out.extend(take)
            i += len(take)
        return out

    def next_batch(self) -> list[IngestBatch]:
        c, ctl = self.cursor, self.control
        if ctl.stopping or (self.max_events is not None and c.next_index >= self.max_events):
            raise StopIteration
        if ctl.ingestion_paused:
            self._anchor = None
            self._awake = _utc_in(0.1)
            return []
        rate = ctl.rate
        if rate != c.nominal_rate:
            # a new pace: later events are spaced by the new rate, continuing from the current time base
            c = self.cursor = MockCursor(c.next_index, c.ts_of(c.next_index) - c.next_index / rate, rate)
            self._anchor = None
        now = time.time()
        if self._anchor is None:
            self._anchor = (now, c.next_index)
        wall0, i0 = self._anchor
        due = int((now - wall0) * rate) + 1 - (c.next_index - i0)
        n = min(self.batch_size, due)
        if self.max_events is not None:
            n = min(n, self.max_events - c.next_index)
        if n <= 0:
            self._awake = _utc_in(wall0 + (c.next_index - i0) / rate - now)
            return []
        events = self._events(c.next_index, n)
        self.cursor = MockCursor(c.next_index + n, c.base_ts, c.nominal_rate)
        delay = ctl.delay
        if delay > 0:
            self._anchor = (wall0 + delay, i0)
            self._awake = _utc_in(delay)
        else:
            self._awake = None
        return [IngestBatch("mock", events)]  # type: ignore[arg-type]

    def next_awake(self) -> Optional[datetime]:
        return self._awake

    def snapshot(self) -> MockCursor:
        return self.cursor


class MockSource(FixedPartitionedSource[IngestBatch, MockCursor]):
    """The mock live stream (one partition), paced at ``control.rate`` events/s.

    ``max_events`` makes it finite (tests, benchmarks); ``base_ts`` fixes the event-time base of a fresh
    stream (default: now), so two runs can produce identical events.

    Without a recovery snapshot (a first start, a deleted or reset recovery state, recovery off) the
    stream continues after its newest event in the log ``db``, if any: started again from index 0 it
    would emit only events the log already holds, every one a duplicate, and append nothing."""

    PART = "mock"

    def __init__(
        self,
        gen: MockGenerator,
        control: FlowControl,
        *,
        max_events: int | None = None,
        batch_size: int = 2000,
        base_ts: float | None = None,
        db: DbLocation | None = None,
    ) -> None:
        self.gen = gen
        self.db = db
        self.control = control
        self.max_events = max_events
        self.batch_size = batch_size
        self.base_ts = base_ts

    def list_parts(self) -> list[str]:
        return [self.PART]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[MockCursor]) -> _MockPartition:
        cursor = resume_state or self._cursor_from_log() or MockCursor(
            0, self.base_ts if self.base_ts is not None else time.time(), self.control.rate
        )
        return _MockPartition(self.gen, self.control, cursor, self.max_events, self.batch_size)


    def _cursor_from_log(self) -> MockCursor | None:
        """The cursor just after the stream's newest event in the log, on the same timeline."""
        if self.db is None or not store_exists(self.db):
            return None
        prefix = self.gen.live_prefix
        with open_store(self.db, readonly=True, wait_out="the mock source") as store:
            newest = store.newest_with_id_prefix(prefix)
        if newest is None or not newest[0][len(prefix):].isdigit():
            return None
        index, rate = int(newest[0][len(prefix):]), self.control.rate
        return MockCursor(index + 1, newest[1] - index / rate, rate)


# ---------------------------------------------------------------------------------- JSON lines file


@dataclass(frozen=True, slots=True)
class FileCursor:
    offset: int  # byte offset of the next line
    line: int  # its 1-based line number


class _JsonlPartition(StatefulSourcePartition[IngestBatch, FileCursor]):
    def __init__(self, path: Path, control: FlowControl, cursor: FileCursor, batch_size: int, follow: bool) -> None:
        self.path = path
        self.control = control
        self.cursor = cursor
        self.batch_size = batch_size
        self.follow = follow
        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._f.seek(cursor.offset)
        self._awake: datetime | None = None

    def next_batch(self) -> list[IngestBatch]:
        if self.control.stopping:
            raise StopIteration
        if self.control.ingestion_paused:
            self._awake = _utc_in(0.1)
            return []
        lines: list[str] = []
        numbers: list[int] = []
        offset, line = self.cursor.offset, self.cursor.line
        while len(lines) < self.batch_size:
            raw = self._f.readline()
            if not raw:
                break
            if not raw.endswith(b"\n") and self.follow:
                self._f.seek(offset)  # a line still being written: take it when complete
                break
            offset += len(raw)
            text = raw.decode("utf-8", errors="backslashreplace").strip()
            if text:
                lines.append(text)
                numbers.append(line)
            line += 1
        self.cursor = FileCursor(offset, line)
        if not lines and offset == self._size():
            if not self.follow:
                raise StopIteration
            self._awake = _utc_in(0.5)
            return []
        self._awake = None
        return [IngestBatch(f"jsonl:{self.path}", lines, numbers)]  # type: ignore[arg-type]

    def _size(self) -> int:
        return os.fstat(self._f.fileno()).st_size

    def next_awake(self) -> Optional[datetime]:
        return self._awake

    def snapshot(self) -> FileCursor:
        return self.cursor

    def close(self) -> None:
        self._f.close()


class JsonlSource(FixedPartitionedSource[IngestBatch, FileCursor]):
    """Events from a JSON-lines file (one event object per line); ``follow`` keeps reading as it grows."""

    def __init__(self, path: Path, control: FlowControl, *, batch_size: int = 2000, follow: bool = False) -> None:
        self.path = Path(path).resolve()
        self.control = control
        self.batch_size = batch_size
        self.follow = follow

    def list_parts(self) -> list[str]:
        return [f"jsonl:{self.path}"]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[FileCursor]) -> _JsonlPartition:
        return _JsonlPartition(self.path, self.control, resume_state or FileCursor(0, 1), self.batch_size, self.follow)


# ---------------------------------------------------------------------------------- the log itself


def read_log(store: Store, first: int, last: int, limit: int) -> LogBatch | None:
    """Events ``first..last`` (at most ``limit``) with their seqs, or None past the end."""
    events, seqs = store.read_batch(first, last, limit)
    if not events:
        return None
    return LogBatch(events, seqs, seqs[-1])


class _LogPartition(StatefulSourcePartition[LogBatch, int]):
    def __init__(self, db: DbLocation, next_seq: int, last: int, batch_size: int) -> None:
        self.store = open_store(db, readonly=True, wait_out="the log source")
        self.next_seq = next_seq
        self.last = last
        self.batch_size = batch_size

    def next_batch(self) -> list[LogBatch]:
        batch = read_log(self.store, self.next_seq, self.last, self.batch_size) if self.next_seq <= self.last else None
        if batch is None:
            self.next_seq = self.last + 1
            raise StopIteration
        self.next_seq = batch.upto + 1
        return [batch]

    def snapshot(self) -> int:
        return self.next_seq

    def close(self) -> None:
        self.store.close()


class LogSource(FixedPartitionedSource[LogBatch, int]):
    """Reads ``first..last`` of the event log, the seq range split into partitions (the replay input)."""

    def __init__(self, db: DbLocation, first: int, last: int, parts: int = 1, *, batch_size: int = 10_000) -> None:
        self.db = db
        self.batch_size = batch_size
        n = last - first + 1
        parts = max(1, min(parts, n)) if n > 0 else 1
        size = -(-n // parts) if n > 0 else 0
        self.ranges: dict[str, tuple[int, int]] = {}
        for k in range(parts):
            a = first + k * size
            b = min(last, a + size - 1)
            self.ranges[f"seq:{a}-{b}"] = (a, b)

    def list_parts(self) -> list[str]:
        return list(self.ranges)

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _LogPartition:
        first, last = self.ranges[for_part]
        return _LogPartition(self.db, resume_state if resume_state is not None else first, last, self.batch_size)


__all__ = [
    "IngestBatch",
    "LogBatch",
    "MockCursor",
    "MockSource",
    "FileCursor",
    "JsonlSource",
    "LogSource",
    "read_log",
]
