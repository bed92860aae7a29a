"""The append step with its writer process: the log comes out once, in seq order, whatever is in
flight when a snapshot is taken, whoever else appends, and after a resume."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from dataflow.event_log import LogAppendLogic
from dataflow.log_writer import LogWriterError
from dataflow.sources import LogBatch
from dataflow.validate import Checked
from storage.event_store import EventStore
from storage.events import Event


def _batch(lo: int, hi: int, user: str = "U1") -> Checked:
    return Checked("test", [Event(f"e{i}", "call", float(i), user, "U2", {"duration": 1.0}) for i in range(lo, hi)])


def _drain(logic: LogAppendLogic) -> list[LogBatch]:
    return list(logic.on_eof()[0])


def _seqs(batches: list[LogBatch]) -> list[int]:
    seqs = [s for b in batches for s in b.seqs]
    for b in batches:
        assert b.upto == b.seqs[-1] and len(b.events) == len(b.seqs)
    return seqs


def _ids(batches: list[LogBatch]) -> list[str]:
    return [e.event_id for b in batches for e in b.events]


def test_batches_come_out_once_in_order_and_a_snapshot_waits_for_what_is_in_flight(db_path: Path) -> None:
    logic = LogAppendLogic(None, db_path)
    out: list[LogBatch] = []
    out += logic.on_batch([_batch(0, 300)])[0]
    out += logic.on_batch([_batch(300, 700), _batch(700, 800)])[0]
    upto = logic.snapshot()
    # whatever was sent is in the log now, though not all of it was passed on yet
    assert logic.writer is not None and logic.writer.in_flight == 0
    with EventStore(db_path) as store:
        assert store.count() == 800
    assert upto == (_seqs(out)[-1] if out else 0)
    out += _drain(logic)
    assert _seqs(out) == list(range(1, 801)) and _ids(out) == [f"e{i}" for i in range(800)]
    assert logic.writer is None  # closed at the end of input


def test_events_others_append_meanwhile_are_passed_on_in_seq_order(db_path: Path) -> None:
    logic = LogAppendLogic(None, db_path)
    out: list[LogBatch] = list(logic.on_batch([_batch(0, 200)])[0])
    with EventStore(db_path) as other:
        other.append(_batch(1000, 1050, "U9").events)  # another writer, between two of ours
    out += logic.on_batch([_batch(200, 400)])[0]
    out += _drain(logic)
    with EventStore(db_path) as store:
        log = [(e.seq, e.event_id) for e in store.read()]
    assert list(zip(_seqs(out), _ids(out))) == log and len(log) == 450


def test_resume_from_a_snapshot_taken_mid_flight_passes_the_rest_on_once(db_path: Path) -> None:
    first = LogAppendLogic(None, db_path)
    out: list[LogBatch] = list(first.on_batch([_batch(0, 500)])[0])
    out += first.on_batch([_batch(500, 900)])[0]
    upto = first.snapshot()
    del first  # a crash: what was not passed on yet is only in the log
    again = LogAppendLogic(upto, db_path)
    out = [b for b in out if b.upto <= upto]  # the downstream state of that snapshot
    out += again.on_batch([_batch(400, 1000)])[0]  # the source resends from its snapshot
    out += _drain(again)
    assert _seqs(out) == list(range(1, 1001)) and _ids(out) == [f"e{i}" for i in range(1000)]


def test_a_writer_process_that_dies_stops_the_flow_with_a_clear_error(db_path: Path) -> None:
    logic = LogAppendLogic(None, db_path)
    logic.on_batch([_batch(0, 10)])
    logic.snapshot()
    assert logic.writer is not None
    os.kill(logic.writer.proc.pid, signal.SIGKILL)
    logic.writer.proc.wait()
    with pytest.raises(LogWriterError, match="writer process stopped"):
        logic.on_batch([_batch(10, 20)])
        logic.snapshot()
