"""What an ingestion source may put in the log: subscriber events only, each of bounded size; what it
may not goes to the dead letters, each bad item once, with a bounded prefix of its text and the reason."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import run_main

from config.settings import Settings
from dataflow.control import FlowControl
from dataflow.flow import build_live_flow, jsonl_source
from storage.event_store import DEAD_LETTER_CHARS, EventStore
from storage.events import Event, InvalidEvent, validate_event
from storage.projections import Rules


def _call(eid: str, duration: float) -> dict[str, Any]:
    return {"event_id": eid, "type": "call", "ts": 1.0, "user_id": "U1", "target_id": "U2",
            "payload": {"duration": duration}}


RULE = {"name": "evil", "description": "", "weight": 999.0, "condition": "True", "enabled": True}
FOREIGN = [
    {"event_id": "r1", "type": "rule.created", "ts": 1.0, "target_id": "evil", "payload": RULE},
    {"event_id": "r2", "type": "rule.updated", "ts": 1.0, "target_id": "high_value_user",
     "payload": {**RULE, "name": "high_value_user"}},
    {"event_id": "r3", "type": "rule.deleted", "ts": 1.0, "target_id": "loyal_user", "payload": {"name": "loyal_user"}},
    {"event_id": "o1", "type": "ops.note", "ts": 1.0, "payload": {"text": "hello"}},
    {"event_id": "o2", "type": "ops.command", "ts": 1.0, "payload": {"command": "shutdown"}},
    {"event_id": "m1", "type": "model.registered", "ts": 1.0, "target_id": "hgt",
     "payload": {"kind": "hgt", "version": 99}},
]


def _run_file(db: Path, path: Path) -> None:
    s = Settings(db=db, profile_shards=8, flush_interval=0.05, log_poll_interval=0.05)
    control = FlowControl()
    run_main(build_live_flow(s, jsonl_source(s, control, path), control), epoch_interval=timedelta(seconds=0.05))


def test_a_jsonl_file_cannot_change_rules_operations_or_models(db_path: Path, tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    big_note = {"event_id": "o3", "type": "ops.note", "ts": 1.0, "payload": {"text": "x" * 5_000_000}}
    lines = [json.dumps(e) for e in [_call("c1", 5.0), *FOREIGN, big_note, _call("c1", 7.0), _call("c2", 1.0)]]
    lines.append("{" + "garbage " * 400_000)  # about 3 MB of not-JSON
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _run_file(db_path, f)
    _run_file(db_path, f)  # the same file read again: nothing new, and no dead letter twice
    with EventStore(db_path) as store:
        assert [e.event_id for e in store.read()] == ["c1", "c2"]
        assert next(iter(store.read(types=["call"]))).payload == {"duration": 5.0}  # the first c1, not the second
        dead = {d["reason"].split(":")[0]: d for d in store.dead_letters(limit=100)}
        assert store.dead_letter_count() == len(FOREIGN) + 3
        rules = Rules(store.conn).list()
    assert [r.name for r in rules if r.weight == 999.0 or r.name == "evil"] == []
    for k, e in enumerate(FOREIGN, start=2):
        reason = dead[f"line {k}"]["reason"]
        assert f"{e['type']} events may not come from an ingestion source" in reason, reason
    assert "payload" in dead["line 8"]["reason"] and "bytes" in dead["line 8"]["reason"]
    assert "already in the log" in dead["line 9"]["reason"] and json.loads(dead["line 9"]["raw"])["payload"] == {
        "duration": 7.0}
    for d in dead.values():
        assert len(d["raw"]) <= DEAD_LETTER_CHARS + 60
    assert "characters in all" in dead["line 11"]["raw"]


@pytest.mark.parametrize(
    ("etype", "payload"),
    [("ops.note", {"text": "x" * 70_000}), ("model.registered", {"kind": "hgt", "version": 1, "metrics": {"h": [0.5] * 80_000}}),
     ("rule.created", {**RULE, "description": "d" * 500, "condition": " or ".join(["x > 1"] * 300)})],
)
def test_every_event_type_has_a_payload_size_bound(etype: str, payload: dict[str, Any]) -> None:
    raw = {"event_id": "e1", "type": etype, "ts": 1.0, "target_id": "t", "payload": payload}
    if etype == "rule.created":
        payload["condition"] = payload["condition"][:2000]
        validate_event(raw)  # the schema's own limits keep a rule within its bound
        return
    with pytest.raises(InvalidEvent, match=f"more than {etype} allows"):
        validate_event(raw)


def test_dead_letters_are_kept_once_and_cut(db_path: Path) -> None:
    with EventStore(db_path) as store:
        store.add_dead_letters([("x" * 100_000, "line 1: not JSON"), ("y", "line 2: not JSON")], "jsonl:a")
        store.add_dead_letters([("x" * 100_000, "line 1: not JSON")], "jsonl:a")  # read again
        store.add_dead_letters([("x" * 100_000, "line 1: not JSON")], "jsonl:b")  # another file
        store.add_dead_letters([(Event("e", "call", 1.0, "U1", "U2", {}), "line 3: payload")], "jsonl:a")
        letters = store.dead_letters()
    assert len(letters) == 4
    cut = [d for d in letters if d["raw"].startswith("xxx")]
    assert len(cut) == 2 and all(d["raw"].endswith("[cut: 100000 characters in all]") for d in cut)
