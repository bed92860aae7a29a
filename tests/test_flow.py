"""The live flow through bytewax.testing: folds, dead letters, unknown users, other writers,
the refresh branch's input, resume after an abort, and the JSON-lines source."""

from __future__ import annotations

import json
import pickle
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Stream
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from dataflow.sources import LogBatch
from dataflow.control import FlowControl
from dataflow.flow import build_live_flow, jsonl_source
from dataflow.generator import MockGenerator
from dataflow.projection import ProfileShardLogic
from dataflow.sinks import RulesSink
from dataflow.validate import check_event, validate_items
from storage.event_store import EventStore
from storage.events import SOURCE_TYPES, Event, InvalidEvent, validate_event
from storage.projections import Checkpoints, Profiles
from config.settings import Settings


def _settings(db: Path) -> Settings:
    return Settings(db=db, profile_shards=8, flush_interval=0.05, log_poll_interval=0.05)


def _reg(eid: str, uid: str, ts: float, **attrs: Any) -> dict[str, Any]:
    payload = {
        "name": "王芳", "gender": "F", "age": 30, "city": "杭州", "plan_type": "5G畅享套餐", "level": "金卡",
        "device_brand": "华为", "monthly_fee": 128.0, "tenure_months": 24,
    }
    payload.update(attrs)
    return {"event_id": eid, "type": "user.registered", "ts": ts, "user_id": uid, "payload": payload}


def _ev(eid: str, etype: str, ts: float, uid: str, target: str, **payload: Any) -> dict[str, Any]:
    return {"event_id": eid, "type": etype, "ts": ts, "user_id": uid, "target_id": target, "payload": payload}


def _run(db: Path, batches: list[Any], **kw: Any) -> FlowControl:
    control = FlowControl()
    flow = build_live_flow(_settings(db), TestingSource(batches), control, **kw)
    run_main(flow, epoch_interval=timedelta(seconds=0.05))
    return control


def _profiles(db: Path) -> dict[str, dict[str, Any]]:
    with EventStore(db) as store:
        return {uid: doc for uid, doc, _ in Profiles(store.conn).iter_all()}


def test_fold_of_hand_written_events(db_path: Path) -> None:
    batches = [
        [
            _reg("e1", "U1", 100.0),
            _ev("e2", "call", 110.0, "U1", "U2", duration=60.0),
            _ev("e3", "call", 120.0, "U1", "U3", duration=30.5),
        ],
        [
            _ev("e4", "call", 130.0, "U1", "U2", duration=10.0),
            _ev("e5", "app.usage", 140.0, "U1", "A1", duration=100.0),
            _ev("e6", "product.order", 150.0, "U1", "P1", amount=25.5),
            {"event_id": "e7", "type": "user.updated", "ts": 160.0, "user_id": "U1", "payload": {"monthly_fee": 99.0}},
            _ev("e8", "app.click", 170.0, "U1", "A2"),
        ],
    ]
    _run(db_path, batches)
    u1 = _profiles(db_path)["U1"]
    assert u1["registered"] is True and u1["name"] == "王芳" and u1["plan_type"] == "5G畅享套餐"
    assert u1["monthly_fee"] == 99.0 and u1["tenure_months"] == 24  # the update won, the rest stayed
    assert u1["event_counts"] == {"app.click": 1, "app.usage": 1, "call": 3, "product.order": 1}
    assert u1["total_events"] == 6 and u1["call_partners"] == 2 and u1["call_partner_ids"] == ["U2", "U3"]
    assert u1["call_duration"] == 100.5 and u1["app_duration"] == 100.0 and u1["spend"] == 25.5
    assert u1["first_event_at"] == 110.0 and u1["last_event_at"] == 170.0
    with EventStore(db_path) as store:
        assert store.count() == 8
        assert Checkpoints(store.conn).get("profiles") == 8  # every seq is in the projection
        row = store.conn.execute("SELECT last_seq FROM profiles WHERE user_id = 'U1'").fetchone()
        assert row[0] == 8


def test_unknown_user_gets_a_default_profile(db_path: Path) -> None:
    _run(db_path, [[_ev("x1", "product.click", 5.0, "NEWBIE", "P9"), _ev("x2", "call", 6.0, "NEWBIE", "U1",
                                                                          duration=3.0)]])
    doc = _profiles(db_path)["NEWBIE"]
    assert doc["registered"] is False and doc["plan_type"] == "unknown" and doc["monthly_fee"] == 0.0
    assert doc["event_counts"] == {"call": 1, "product.click": 1} and doc["total_events"] == 2
    # the call's other end is a graph node, not a profile: only subjects of events get profiles
    assert set(_profiles(db_path)) == {"NEWBIE"}


def test_bad_events_go_to_dead_letters_and_the_flow_goes_on(db_path: Path) -> None:
    batches = [
        [
            _ev("g1", "call", 1.0, "U1", "U2", duration=5.0),
            _ev("b1", "call", 2.0, "U1", "U2", duration=-5.0),  # negative duration
            {"event_id": "b2", "type": "teleport", "ts": 3.0, "user_id": "U1"},  # unknown type
            "{not json",
            _ev("b3", "app.usage", 4.0, "U1", "A1"),  # missing duration
        ],
        [_ev("g2", "app.click", 5.0, "U1", "A1")],  # after the bad ones: still processed
    ]
    _run(db_path, batches)
    with EventStore(db_path) as store:
        assert [e.event_id for e in store.read()] == ["g1", "g2"]
        dead = {d["reason"]: d for d in store.dead_letters()}
    assert len(dead) == 4
    reasons = " | ".join(dead)
    assert "payload.duration" in reasons and "greater than or equal to 0" in reasons
    assert "unknown event type 'teleport'" in reasons
    assert "not JSON" in reasons
    assert "app.usage: payload.duration: Field required" in reasons
    assert any(d["raw"] == "{not json" for d in dead.values())  # kept verbatim
    assert _profiles(db_path)["U1"]["total_events"] == 2


def test_events_other_writers_appended_are_folded_too(db_path: Path, small_gen: MockGenerator) -> None:
    """The projection follows the log, not only the flow's own input: a generated history is folded."""
    history = list(small_gen.dataset())
    with EventStore(db_path) as store:
        store.append(history)
    uid = "U0000001"
    _run(db_path, [[_ev("live-1", "app.click", 2e9, uid, "A00001")]])
    doc = _profiles(db_path)[uid]
    expected_calls = sum(1 for e in history if e.user_id == uid and e.type == "call")
    assert doc["registered"] is True and doc["event_counts"].get("call", 0) == expected_calls
    assert doc["last_event_at"] == 2e9
    with EventStore(db_path) as store:
        assert Checkpoints(store.conn).get("profiles") == len(history) + 1


def test_a_resent_batch_is_not_counted_twice(db_path: Path) -> None:
    batch = [_ev("d1", "call", 1.0, "U1", "U2", duration=5.0), _ev("d2", "app.click", 2.0, "U1", "A1")]
    _run(db_path, [batch, batch])
    with EventStore(db_path) as store:
        assert store.count() == 2
    assert _profiles(db_path)["U1"]["total_events"] == 2


def test_refresh_branch_gets_every_logged_event_with_its_seq(db_path: Path) -> None:
    seen: list[LogBatch] = []

    def attach(log_batches: Stream[LogBatch], control: FlowControl) -> None:
        assert control.refresh_attached
        op.output("capture", log_batches, TestingSink(seen))

    control = _run(
        db_path,
        [[
            _reg("n1", "U7", 1.0),
            _ev("n2", "call", 2.0, "U7", "U8", duration=1.0),
            _ev("n3", "app.usage", 3.0, "U8", "A1", duration=2.0),
            {"event_id": "n4", "type": "product.listed", "ts": 4.0, "target_id": "P5",
             "payload": {"name": "流量包", "category": "流量", "price": 30.0}},
            {"event_id": "n5", "type": "label.observed", "ts": 5.0, "user_id": "U7",
             "payload": {"label": "churn", "value": 1}},
        ]],
        attach_refresh=attach,
    )
    assert control.refresh_attached
    got = [(seq, e.event_id, e.type) for b in seen for seq, e in zip(b.seqs, b.events)]
    assert got == [(1, "n1", "user.registered"), (2, "n2", "call"), (3, "n3", "app.usage"),
                   (4, "n4", "product.listed"), (5, "n5", "label.observed")]
    assert max(d.upto for d in seen) == 5


def test_resume_after_abort_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    """Bytewax recovery: abort mid-stream, run again from the snapshot, compare with a clean run."""
    batches = [[_ev(f"r{i}-{k}", "call", float(i), f"U{k}", f"U{k + 1}", duration=1.0) for k in range(5)]
               for i in range(20)]
    clean = tmp_path / "clean.db"
    _run(clean, batches)

    db = tmp_path / "resumed.db"
    rdir = tmp_path / "recovery"
    rdir.mkdir()
    init_db_dir(rdir, 1)
    inputs: list[Any] = [*batches[:12], TestingSource.ABORT(), *batches[12:]]
    s = _settings(db)
    counts = []
    for _ in range(2):  # the first run aborts, the second resumes from the last snapshot
        control = FlowControl()
        flow = build_live_flow(s, TestingSource(inputs), control)
        run_main(flow, epoch_interval=timedelta(seconds=0), recovery_config=RecoveryConfig(rdir))
        with EventStore(db) as store:
            counts.append(store.count())
    assert 0 < counts[0] < 100 and counts[1] == 100  # the first run really stopped half way
    assert _profiles(db) == _profiles(clean)
    with EventStore(db) as store, EventStore(clean) as ref:
        assert store.count() == ref.count() == 100
        assert Checkpoints(store.conn).get("profiles") == 100


def test_check_event_accepts_and_refuses_exactly_what_validate_event_does(small_gen: MockGenerator) -> None:
    events = list(small_gen.dataset())[:3000] + small_gen.live_chunk(0, 1.7e9, 100.0)
    for e in events:
        assert check_event(e) == validate_event(e)
        assert check_event(e.to_dict()) == validate_event(e.to_dict())
    bad: list[Any] = [
        {**events[-1].to_dict(), "ts": float("nan")},
        {**events[-1].to_dict(), "event_id": "has space"},
        {**events[-1].to_dict(), "extra": 1},
        Event("e", "call", 1.0, "U1", None, {"duration": 1.0}),  # a call needs a target
        Event("e", "user.updated", 1.0, "U1", None, {}),
        "[]",
    ]
    for raw in bad:
        with pytest.raises(InvalidEvent) as a:
            check_event(raw)
        with pytest.raises(InvalidEvent) as b:
            validate_event(raw)
        assert a.value.reason == b.value.reason


def _outcome(raw: Any) -> Any:
    try:
        return validate_event(raw)
    except InvalidEvent as err:
        return err.reason


def _source_outcome(raw: Any) -> Any:
    out = _outcome(raw)
    if isinstance(out, Event) and out.type not in SOURCE_TYPES:
        return f"type: {out.type} events may not come from an ingestion source (only subscriber and " \
            "catalogue events); rules, operations and models are changed through the API or the CLI"
    return out


def test_batch_validation_agrees_with_validate_event_item_by_item(small_gen: MockGenerator) -> None:
    """The batch path (one call for a clean batch, item by item otherwise) gives what validate_event
    gives each item: the same Event, or the same reason, in input order."""
    live = small_gen.live_chunk(0, 1.7e9, 100.0)[:40]
    base = live[0].to_dict()
    reg = next(e for e in small_gen.dataset() if e.type == "user.registered").to_dict()
    odd: list[Any] = [
        {**base, "ts": 5},  # an int time
        {**base, "ts": "1.5e9"},  # a numeric string (lax mode, as the models)
        {k: v for k, v in base.items() if k != "version"},  # a default left out
        {**reg, "payload": {k: v for k, v in reg["payload"].items() if k != "gender"}},  # payload default
        {**reg, "target_id": None},
        json.dumps(base),  # JSON text, as from a file
        json.dumps(base).encode(),
        Event("u1", "user.updated", 3.0, "U1", None, {"city": "北京", "name": None}),  # not a fast type
        {"event_id": "o1", "type": "ops.note", "ts": 1.0, "payload": {"command": "x"}},
        {**base, "payload": {"duration": -1.0}},  # refused
        {**base, "user_id": None},
        {**base, "type": ["call"]},
        "{not json",
        b"\xff",
        42,
    ]
    assert validate_items(live) == [validate_event(e) for e in live]
    mixed = live[:20] + odd + live[20:]
    got = validate_items(mixed, list(range(1, len(mixed) + 1)))
    # what validate_event gives each item, less the types an ingestion source may not carry
    want = [_source_outcome(raw) for raw in mixed]
    assert [isinstance(g, str) for g in got] == [isinstance(w, str) for w in want]  # outcomes in input order
    # repr: 5 and 5.0 are equal, but the log must get the same value of the same type
    assert [repr(g) for g in got if isinstance(g, Event)] == [repr(w) for w in want if isinstance(w, Event)]
    assert [g for g in got if isinstance(g, str)] == [f"line {k + 1}: {w}" for k, w in enumerate(want) if isinstance(w, str)]
    for raw in odd:
        assert repr(_outcome_of_check(raw)) == repr(_outcome(raw))


def _outcome_of_check(raw: Any) -> Any:
    try:
        return check_event(raw)
    except InvalidEvent as err:
        return err.reason


def test_jsonl_source_with_line_numbers(db_path: Path, tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    lines = [
        json.dumps(_ev("j1", "call", 1.0, "U1", "U2", duration=5.0)),
        "",
        json.dumps(_ev("j2", "call", 2.0, "U1", "U2", duration="long")),
        json.dumps(_ev("j3", "app.click", 3.0, "U1", "A1"), ensure_ascii=False),
    ]
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    s = _settings(db_path)
    control = FlowControl()
    run_main(build_live_flow(s, jsonl_source(s, control, f), control), epoch_interval=timedelta(seconds=0.05))
    with EventStore(db_path) as store:
        assert [e.event_id for e in store.read()] == ["j1", "j3"]
        (dead,) = store.dead_letters()
    assert dead["reason"].startswith("line 3: call: payload.duration")
    assert dead["source"] == f"jsonl:{f.resolve()}"
    assert _profiles(db_path)["U1"]["total_events"] == 2


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.step = 0.0

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_shard_flushes_space_out_when_writing_profiles_gets_costly() -> None:
    clock = _Clock()
    logic = ProfileShardLogic(None, 1.0, shards=64, clock=clock)
    e = Event("a", "call", 1.0, "U1", "U2", {"duration": 1.0})
    assert list(logic.on_batch([([e], [1], 1)])[0]) == []  # before the first flush time: kept
    clock.t = 5.0
    (flush,) = logic.on_batch([([e], [2], 2)])[0]
    assert [d[0] for d in flush.docs] == ["U1"] and flush.upto == 2
    assert logic.next_flush == 6.0  # a cheap flush: the next one flush_interval later
    clock.t, clock.step = 10.0, 0.01  # each clock reading now costs 10 ms: an expensive flush
    logic.on_batch([([e], [3], 3)])
    assert logic.next_flush > 10.0 + 9.0  # 10 ms x 1.5 x 64 shards within a 10 % budget
    again = ProfileShardLogic(logic.snapshot(), 1.0, shards=64)  # the snapshot restores the state
    assert again.profiles["U1"].document() == logic.profiles["U1"].document() and again.upto == 3


def test_rules_projection_takes_rule_events_others_appended_and_never_steps_back(db_path: Path) -> None:
    from scoring.rule_store import RuleStore
    from scoring.rules import Rule

    with EventStore(db_path) as store:
        rs = RuleStore(store)  # applies its own changes as it appends them
        rs.create(Rule("a", "", 0.5, "monthly_fee < 50"))
        rs.update(Rule("a", "", 0.7, "monthly_fee < 40"))
        rs.create(Rule("b", "", 0.1, "total_events > 5"))
        rs.delete("b")
        # a rule event appended without applying it (e.g. a log copied from elsewhere)
        store.append([validate_event({"event_id": "rc", "type": "rule.created", "ts": 1.0, "target_id": "c",
                                      "payload": {"name": "c", "weight": 0.2, "condition": "tenure_months < 3"}})])
        version = rs.version()
    _run(db_path, [[_ev("x", "app.click", 2.0, "U1", "A1")]])
    with EventStore(db_path) as store:
        rows = {r.name: (r.weight, r.condition) for r in RuleStore(store).list()}
        assert Checkpoints(store.conn).get("rules") == version
    assert rows == {"a": (0.7, "monthly_fee < 40"), "c": (0.2, "tenure_months < 3")}
    # a change the projection already has (b's creation, applied and deleted since) does not come back
    part = RulesSink(db_path).build_part("rules", "rules", None)
    with EventStore(db_path) as store:
        (created_b,) = [e for e in store.read(types=["rule.created"]) if e.payload["name"] == "b"]
    part.write_batch([(created_b.seq, created_b)])
    part.close()
    with EventStore(db_path) as store:
        assert {r.name for r in RuleStore(store).list()} == {"a", "c"}


def test_a_flow_on_a_folded_store_starts_at_its_checkpoint_and_keeps_every_profile(
    tmp_path: Path, small_gen: MockGenerator
) -> None:
    """A store folded by `ups init` (no recovery state yet): the flow reads only the log past the
    profiles' checkpoint, and the users it meets continue from their stored profiles."""
    from dataflow.bulk_fold import bulk_fold
    from dataflow.runner import replay

    db = tmp_path / "folded.db"
    with EventStore(db) as store:
        store.append(list(small_gen.dataset()))
        folded = bulk_fold(store).last_seq
    seen: list[LogBatch] = []

    def attach(log_batches: Stream[LogBatch], control: FlowControl) -> None:
        op.output("capture", log_batches, TestingSink(seen))

    uid = "U0000001"
    before = _profiles(db)[uid]
    _run(db, [[_ev("live-1", "app.click", 2e9, uid, "A00001")], [_ev("live-2", "call", 2e9 + 1, "U0000002", uid,
                                                                     duration=7.0)]], attach_refresh=attach)
    assert [s for b in seen for s in b.seqs] == [folded + 1, folded + 2]  # the history is not read again
    after = _profiles(db)
    assert after[uid]["total_events"] == before["total_events"] + 1 and after[uid]["last_event_at"] == 2e9
    with EventStore(db) as store:
        assert Checkpoints(store.conn).get("profiles") == folded + 2
    # the same profiles as a fold of the whole log from nothing
    replay(_settings(db), from_seq=1, into=tmp_path / "replayed.db")
    assert after == _profiles(tmp_path / "replayed.db")


def test_a_flow_resumes_a_pending_rule_event_below_the_profiles_checkpoint(db_path: Path) -> None:
    rule = Event("r1", "rule.created", 1.0, None, "big", {"name": "big", "weight": 1.0, "condition": "tenure_months > 1"})
    with EventStore(db_path) as store:
        store.append([rule, Event("c1", "call", 2.0, "U1", "U2", {"duration": 1.0})])
        Checkpoints(store.conn).set("profiles", 2)  # folded, but the rule never reached the rules projection
    _run(db_path, [[_ev("c2", "call", 3.0, "U1", "U2", duration=1.0)]])
    with EventStore(db_path) as store:
        assert [r.name for r in store.rules.list()] == ["big"]


def test_a_live_shard_snapshots_only_its_unflushed_profiles_and_a_resume_loads_the_others(db_path: Path) -> None:
    """The snapshot of a live shard does not grow with every user met: flushed profiles are in the store,
    and a resumed shard continues them from there."""
    from dataflow.flow import ProfileLoader

    def call(i: int, user: str) -> Event:
        return Event(f"c{i}", "call", float(i), user, "U9", {"duration": 1.0})

    EventStore(db_path).close()  # an empty store
    clock = [0.0]
    shard = ProfileShardLogic(None, 10.0, loader=ProfileLoader(db_path), clock=lambda: clock[0])
    shard.on_batch([([call(1, "U1"), call(2, "U2")], [1, 2], 2)])
    clock[0] = 20.0
    (flush,) = shard.on_notify()[0]
    with EventStore(db_path) as store, store.transaction():
        store.profiles.upsert_many(flush.docs)  # what the profile sink does
    shard.on_batch([([call(3, "U1")], [3], 3)])  # U1 changed again, not flushed yet; U2 is as stored
    snap = shard.snapshot()
    profiles, dirty, upto, _ = pickle.loads(snap)
    assert [p[0] for p in profiles] == ["U1"] and dirty == {"U1"} and upto == 3
    resumed = ProfileShardLogic(snap, 10.0, loader=ProfileLoader(db_path), clock=lambda: clock[0])
    resumed.on_batch([([call(4, "U2"), call(5, "U1")], [4, 5], 5)])
    clock[0] = 40.0
    (flush,) = resumed.on_notify()[0]
    docs = {uid: json.loads(doc) for uid, doc, _ in flush.docs}
    assert docs["U1"]["total_events"] == 3 and docs["U2"]["total_events"] == 2
