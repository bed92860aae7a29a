"""The append step with its writer process: the log comes out once, in seq order, whatever is in
flight when a snapshot is taken, whoever else appends, and after a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dataflow.event_log import LogAppendLogic
from dataflow.log_writer import LogWriterError
from dataflow.sources import LogBatch
from dataflow.sources import IngestBatch
from storage.event_store import EventStore
from storage.events import Event, validate_event


def _batch(lo: int, hi: int, user: str = "U1") -> IngestBatch:
    return IngestBatch("test", [Event(f"e{i}", "call", float(i), user, "U2", {"duration": 1.0}) for i in range(lo, hi)])


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
        other.append(_batch(1000, 1050, "U9").items)  # another writer, between two of ours
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


def test_the_writer_validates_and_keeps_refused_items_as_dead_letters_in_input_order(db_path: Path) -> None:
    import types

    good = {"event_id": "d1", "type": "call", "ts": 3, "user_id": "U1", "target_id": "U2", "payload": {"duration": 2}}
    items: list[object] = [
        Event("i1", "call", 5, "U1", "U2", {"duration": 1}),  # valid, but validation makes its numbers floats
        good,  # a dict
        json.dumps({**good, "event_id": "j1"}),  # JSON text
        {**good, "event_id": "bad1", "payload": {"duration": -1.0}},
        types.MappingProxyType({**good, "event_id": "m1"}),  # marshal cannot carry it: validated in the flow
        object(),  # nor this, which is refused there
        Event("i2", "app.click", 6.0, "U1", "A1", {}),
    ]
    logic = LogAppendLogic(None, db_path)
    out = list(logic.on_batch([IngestBatch("file", items, [10, 11, 12, 13, 14, 15, 16])])[0]) + _drain(logic)
    want = [validate_event(x) for k, x in enumerate(items) if k not in (3, 5)]
    assert [repr(e) for e in out[0].events] == [repr(e) for e in want]  # 5 became 5.0 in what is folded too
    with EventStore(db_path) as store:
        assert [repr(Event(e.event_id, e.type, e.ts, e.user_id, e.target_id, e.payload, e.version)) for e in store.read()] == [
            repr(e) for e in want
        ]
        dead = list(reversed(store.dead_letters()))
    assert [d["reason"].split(":")[0] for d in dead] == ["line 13", "line 15"]
    assert "payload.duration" in dead[0]["reason"] and "must be a JSON object" in dead[1]["reason"]
    assert json.loads(dead[0]["raw"])["event_id"] == "bad1" and {d["source"] for d in dead} == {"file"}


def test_a_refused_event_in_a_batch_of_events_is_kept_as_its_json(db_path: Path) -> None:
    bad = Event("b1", "call", 2.0, "U1", None, {"duration": 1.0})  # a call needs a target
    batch = [Event("a1", "call", 1.0, "U1", "U2", {"duration": 1.0}), bad, Event("c1", "app.click", 3.0, "U1", "A1", {})]
    logic = LogAppendLogic(None, db_path)
    out = list(logic.on_batch([IngestBatch("mock", batch)])[0]) + _drain(logic)
    assert _ids(out) == ["a1", "c1"] and _seqs(out) == [1, 2]
    with EventStore(db_path) as store:
        (dead,) = store.dead_letters()
    assert dead["raw"] == bad.to_json() and dead["source"] == "mock"
    with pytest.raises(Exception) as err:
        validate_event(bad)
    assert dead["reason"] == err.value.reason  # type: ignore[attr-defined]


def test_the_writer_process_does_not_load_the_mock_generator() -> None:
    # it starts with every flow: Faker and the generator would add their import to each run
    script = "import sys, dataflow.log_writer; print(sorted({'faker', 'dataflow.generator'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "[]", out.stderr
