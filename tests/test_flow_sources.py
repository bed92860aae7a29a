"""The mock live source: resumable cursor, identical re-emission, pause, rate changes, finite mode."""

from __future__ import annotations

import time

from dataflow.control import FlowControl
from dataflow.generator import MockGenerator
from dataflow.sources import IngestBatch, MockCursor, MockSource


def _drain(part, n: int, timeout: float = 20.0) -> list:  # type: ignore[no-untyped-def]
    out: list = []
    deadline = time.time() + timeout
    while len(out) < n and time.time() < deadline:
        try:
            batches = part.next_batch()
        except StopIteration:
            break
        for b in batches:
            assert isinstance(b, IngestBatch) and b.origin == "mock"
            out.extend(b.items)
        if not batches:
            time.sleep(0.001)
    return out


def test_resumed_partition_re_emits_the_very_same_events(small_gen: MockGenerator) -> None:
    control = FlowControl(rate=1_000_000)
    src = MockSource(small_gen, control, batch_size=300, base_ts=1_000.0)
    first = src.build_part("ingest", "mock", None)
    events = _drain(first, 2500)[:2500]
    assert [e.event_id for e in events] == [f"{small_gen.tag}-l{i}" for i in range(2500)]
    cursor = first.snapshot()
    assert isinstance(cursor, MockCursor) and cursor.next_index >= 2500 and cursor.base_ts == 1_000.0
    # a partition resumed from an earlier snapshot emits exactly what was emitted after that point
    again = _drain(src.build_part("ingest", "mock", MockCursor(1000, 1_000.0, 1_000_000)), 1500)[:1500]
    assert again == events[1000:]


def test_finite_mode_stops_at_max_events(small_gen: MockGenerator) -> None:
    src = MockSource(small_gen, FlowControl(rate=1_000_000), max_events=1234, batch_size=500, base_ts=0.0)
    events = _drain(src.build_part("ingest", "mock", None), 10_000)
    assert len(events) == 1234 and events[-1].event_id.endswith("-l1233")


def test_pause_and_rate_change(small_gen: MockGenerator) -> None:
    control = FlowControl(rate=1000)
    part = MockSource(small_gen, control, batch_size=50, base_ts=0.0).build_part("ingest", "mock", None)
    before = _drain(part, 100)
    control.ingestion_paused = True
    time.sleep(0.2)
    assert part.next_batch() == []  # nothing while paused, however long it has been
    control.ingestion_paused = False
    control.rate = 500.0  # generator.config: later events are spaced by the new rate
    after = _drain(part, 100)
    gaps_before = {round(b.ts - a.ts, 3) for a, b in zip(before, before[1:])}
    gaps_after = {round(b.ts - a.ts, 3) for a, b in zip(after, after[1:])}
    assert gaps_before == {0.001} and gaps_after == {0.002}
    assert after[0].ts > before[-1].ts  # event time goes on from where it was
    assert part.snapshot().nominal_rate == 500.0
