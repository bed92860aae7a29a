"""Contract of the event store: what every backend must do. Each test runs once per backend (the
``store_db`` fixture: a SQLite file, a fresh PostgreSQL database), through ``storage.open_store`` only."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from typing import Any, Callable

import numpy as np

import pytest

from storage import DatabaseError, DbLocation, Event, SchemaTooNew, Store, StoredEvent, open_store
from storage.columns import NewEvents
from storage import graph_columns
from storage.graph_columns import KINDS as GRAPH_KINDS, NODE_TYPES as GRAPH_NODE_TYPES
from store_backends import db_arg, raw_event_count, set_schema_version


def ev(i: int, user: str = "U1", etype: str = "call") -> Event:
    return Event(f"e{i}", etype, 1000.0 + i, user, "U2", {"duration": float(i)})


def test_append_is_idempotent_and_reports_new(store_db: DbLocation) -> None:
    with open_store(store_db) as s:
        r1 = s.append([ev(1), ev(2), ev(3)])
        assert [eid for _, eid in r1.new] == ["e1", "e2", "e3"] and r1.duplicates == 0
        r2 = s.append([ev(2), ev(4), ev(4)])  # one old, one new, one repeated inside the batch
        assert r2.new_ids == {"e4"} and r2.duplicates == 2
        assert s.count() == 4
        assert s.append([]).new == []


def test_bulk_append_is_idempotent_and_keeps_the_given_order(store_db: DbLocation) -> None:
    """``append_columns`` (generation, ``ups init``): events numbered in the order given, each event_id
    once (the first of a repeated one), every field read back as ``append`` stores it."""
    with open_store(store_db) as s:
        s.append([ev(1)])
        assert s.append_columns(NewEvents.of_events([ev(9), ev(1), ev(3), ev(9), ev(2)])) == (3, 2)
        assert s.append_columns(NewEvents.of_events([])) == (0, 0)
        assert s.append_columns(NewEvents.of_events([ev(2), ev(4)])) == (1, 1)
        got = list(s.read())
        s.append([ev(5)])
        assert [(e.seq, e.event_id) for e in got] == [(1, "e1"), (2, "e9"), (3, "e3"), (4, "e2"), (5, "e4")]
        assert [(e.ts, e.user_id, e.target_id, e.payload, e.version) for e in got] == [
            (1000.0 + i, "U1", "U2", {"duration": float(i)}, 1) for i in (1, 9, 3, 2, 4)
        ]
        assert s.last_seq() == s.count() == 6 and s.get("e5") is not None


def test_column_reads_give_types_as_codes_of_the_asked_types(store_db: DbLocation) -> None:
    """What the bulk fold and the graph build read: the types of a chunk as a Categorical whose codes
    index the types asked for, in the log's order, whichever way the store reads the chunk."""
    with open_store(store_db) as s:
        s.append([ev(1), ev(2, etype="app.click"), ev(3, etype="sms"), ev(4)])
        s.append_columns(NewEvents.of_events([ev(5, etype="app.click")]))
        batches = list(s.read_columns(1, None, ["app.click", "call"], chunk=2))
    assert [b.upto for b in batches] == [2, 4, 5]
    assert [list(b.seq) for b in batches] == [[1, 2], [4], [5]]
    assert [list(b.type.codes) for b in batches] == [[1, 0], [1], [0]]
    assert [list(b.type) for b in batches] == [["call", "app.click"], ["call"], ["app.click"]]


def test_seq_is_global_and_ordered(store_db: DbLocation) -> None:
    with open_store(store_db) as s:
        s.append([ev(i) for i in range(50)])
        s.append([ev(i) for i in range(50, 120)])
        got = list(s.read(page=7))
        assert [e.seq for e in got] == list(range(1, 121))
        assert [e.event_id for e in got] == [f"e{i}" for i in range(120)]
        assert [e.seq for e in s.read(from_seq=100, to_seq=104)] == [100, 101, 102, 103, 104]
        assert len(list(s.read(from_seq=10, limit=15, page=4))) == 15
        assert s.last_seq() == 120


def test_round_trip_keeps_every_field(store_db: DbLocation) -> None:
    e = Event("x1", "user.registered", 12.5, "U9", None, {"name": "张伟", "monthly_fee": 88.0}, 1)
    with open_store(store_db) as s:
        s.append([e])
        got = s.get("x1")
    assert got is not None
    assert (got.event_id, got.type, got.ts, got.user_id, got.target_id, got.payload, got.version) == (
        "x1", "user.registered", 12.5, "U9", None, {"name": "张伟", "monthly_fee": 88.0}, 1,
    )
    assert got.recorded_at > 0


def test_events_of_user_and_counts(store_db: DbLocation) -> None:
    with open_store(store_db) as s:
        s.append([ev(1, "A"), ev(2, "B"), ev(3, "A", "app.click"), ev(4, "A")])
        assert [e.event_id for e in s.events_of_user("A")] == ["e1", "e3", "e4"]
        assert s.counts_by_type() == {"app.click": 1, "call": 3}


def test_failed_batch_is_all_or_nothing(store_db: DbLocation) -> None:
    with open_store(store_db) as s:
        s.append([ev(1)])
        bad = Event("e2", "call", float("nan"), "U1", None, {})
        bad.ts = None  # type: ignore[assignment]  # NOT NULL violation inside the batch
        with pytest.raises(DatabaseError):
            s.append([ev(5), bad])
        assert [e.event_id for e in s.read()] == ["e1"]


def test_model_versions_are_numbered_per_kind(store_db: DbLocation) -> None:
    with open_store(store_db) as s:
        versions = [(kind, s.models.add(kind, {}, {}, b"w")) for kind in ("hgt", "fusion", "hgt", "fusion", "hgt")]
        assert versions == [("hgt", 1), ("fusion", 1), ("hgt", 2), ("fusion", 2), ("hgt", 3)]
        assert s.models.latest_version("hgt") == 3 and s.models.latest_version("fusion") == 2
        assert s.models.get("fusion", 2).kind == "fusion" and s.models.get("fusion", 3) is None
        assert [m["version"] for m in s.models.list("hgt")] == [1, 2, 3]


def test_newer_schema_is_refused_and_left_alone(store_db: DbLocation) -> None:
    with open_store(store_db) as s:
        s.append([ev(1)])
    set_schema_version(store_db, 1000)
    with pytest.raises(SchemaTooNew, match="newer than this UPS knows"):
        open_store(store_db)
    assert raw_event_count(store_db) == 1


def test_dead_letters_keep_the_raw_payload(store_db: DbLocation) -> None:
    raw = '{"type": "call", "event_id": "zz", "payload": {"duration": "long"}}'
    with open_store(store_db) as s:
        s.add_dead_letter(raw, "payload.duration: not a number", source="test")
        s.add_dead_letter({"weird": float("inf")}, "type missing")
        s.add_dead_letter(b"\xff\xfe not utf8", "not JSON")
        rows = s.dead_letters()
        assert s.dead_letter_count() == 3
    assert rows[-1]["raw"] == raw and rows[-1]["reason"] == "payload.duration: not a number"
    assert "weird" in rows[-2]["raw"]
    assert rows[0]["raw"].endswith("not utf8")


def _writer(db: str, prefix: str, n: int, batch: int, bulk: bool = False) -> None:
    """Append ``n`` events in batches, through ``append`` or (``bulk``) the bulk ``append_columns``."""
    with open_store(db) as s:
        for start in range(0, n, batch):
            events = [Event(f"{prefix}{i}", "app.click", float(i), "U1", "A1", {}) for i in range(start, start + batch)]
            s.append_columns(NewEvents.of_events(events)) if bulk else s.append(events)
            time.sleep(0.002)


def _tail(store_db: DbLocation, n: int, batch: int, writers_alive: Callable[[], bool]) -> list[int]:
    """The seqs a reader sees by polling ``read(from_seq=last seen + 1)`` until ``n`` events came in."""
    seen: list[int] = []
    cursor = 1
    deadline = time.time() + 120
    with open_store(store_db) as reader:
        while len(seen) < n and time.time() < deadline:
            got = [e.seq for e in reader.read(from_seq=cursor)]
            seen.extend(got)
            if got:
                cursor = got[-1] + 1
            # a reader never sees half a batch: batches are committed whole
            assert len(seen) % batch == 0
            if not got and not writers_alive():
                seen.extend(e.seq for e in reader.read(from_seq=cursor))
                break
    return seen


def test_reader_reads_while_another_process_appends(store_db: DbLocation) -> None:
    open_store(store_db).close()
    n, batch = 6000, 100
    proc = mp.get_context("spawn").Process(target=_writer, args=(db_arg(store_db), "w", n, batch))
    proc.start()
    seen = _tail(store_db, n, batch, proc.is_alive)
    proc.join(30)
    assert proc.exitcode == 0
    assert seen == list(range(1, n + 1))


def test_a_tailing_reader_misses_no_event_of_concurrent_appenders(store_db: DbLocation) -> None:
    """Four appenders at once (threads, each with its own store): the reader that follows the log by seq
    sees every event exactly once, in seq order, with no seq skipped, however the commits interleave."""
    open_store(store_db).close()
    writers, n, batch = 4, 1500, 50
    errors: list[BaseException] = []

    def write(prefix: str, bulk: bool) -> None:
        try:
            _writer(db_arg(store_db), prefix, n, batch, bulk)
        except BaseException as err:  # reported by the test below, not lost in a thread
            errors.append(err)

    # two append batches of events, two append them as columns (the bulk path)
    threads = [threading.Thread(target=write, args=(f"t{k}-", k % 2 == 1)) for k in range(writers)]
    for t in threads:
        t.start()
    seen = _tail(store_db, writers * n, batch, lambda: any(t.is_alive() for t in threads))
    for t in threads:
        t.join(60)
    assert errors == []
    assert seen == list(range(1, writers * n + 1))
    with open_store(store_db) as s:
        ids = {e.event_id for e in s.read()}
    assert ids == {f"t{k}-{i}" for k in range(writers) for i in range(n)}


@pytest.mark.slow
def test_a_tailing_reader_misses_no_event_of_concurrent_writer_processes(store_db: DbLocation) -> None:
    """The same with three appending processes, re-appending each other's batches too (idempotence)."""
    open_store(store_db).close()
    n, batch = 3000, 100
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db_arg(store_db), prefix, n, batch)) for prefix in ("a", "b", "c", "a")]
    for p in procs:
        p.start()
    seen = _tail(store_db, 3 * n, batch, lambda: any(p.is_alive() for p in procs))
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert seen == list(range(1, 3 * n + 1))
    assert raw_event_count(store_db) == 3 * n


def test_projection_accessors(store_db: DbLocation) -> None:
    import numpy as np

    with open_store(store_db) as s:
        with s.transaction():
            s.profiles.upsert_many([("U1", {"total_events": 3}, 7), ("U2", {"total_events": 1}, 8)])
            s.checkpoints.set("profiles", 8)
        assert s.profiles.get("U1") == {"total_events": 3} and s.profiles.count() == 2
        assert s.profiles.get_many(["U1", "U3"]) == {"U1": {"total_events": 3}}
        assert s.checkpoints.get("profiles") == 8 and s.checkpoints.get("other") == 0
        s.embeddings.put_many([("user", "U1", np.arange(4, dtype=np.float32), 2, 9)])
        row = s.embeddings.get("user", "U1")
        assert row is not None and row.vector.tolist() == [0, 1, 2, 3] and row.model_version == 2
        with s.transaction():  # node types sharing ids, and two calls, in one transaction: each row once, as given
            s.embeddings.put_many([("user", "U2", np.ones(4, np.float32), 2, 9), ("user_neighbourhood", "U2", np.zeros(4, np.float32), 2, 9)])
            s.embeddings.put_many([("product", "P1", np.full(4, 2.0, np.float32), 2, 9)])
        assert s.embeddings.get("user", "U2").vector.tolist() == [1.0] * 4  # type: ignore[union-attr]
        assert s.embeddings.get("user_neighbourhood", "U2").vector.tolist() == [0.0] * 4  # type: ignore[union-attr]
        assert s.embeddings.count("product") == 1 and s.embeddings.count("user_neighbourhood") == 1
        s.rules.upsert("r", "d", 1.5, "tenure_months > 3", True, 10)
        assert s.rules.get("r").weight == 1.5 and s.rules.delete("r") and s.rules.list() == []
        v = s.models.add("hgt", {"dim": 4}, {"auc": 0.9}, b"w")
        assert s.models.latest("hgt").version == v and s.models.latest("fusion") is None
        j = s.jobs.create("refresh", {"epochs": 1})
        s.jobs.update(j, state="done", progress=1.0, result={"ok": True})
        assert s.jobs.get(j)["result"] == {"ok": True} and s.jobs.all_active() == []
        op = s.ops.request("ingestion.stop")
        assert [o["id"] for o in s.ops.pending()] == [op]
        s.ops.resolve(op, "applied", "ingestion paused")
        assert s.ops.pending() == [] and s.ops.get(op)["effect"] == "ingestion paused"
        s.status.put("dataflow", {"state": "running"})
        assert s.status.get("dataflow")["state"] == "running"


def test_log_queries_behind_named_methods(store_db: DbLocation) -> None:
    with open_store(store_db) as s:
        assert s.last_event() == (0, None) and s.first_recorded_after(0) is None
        s.append([
            Event("aaaaaaaa-pP00001", "product.listed", 1.0, None, "P1", {"price": 3.0}),
            Event("bbbbbbbb-pP00001", "product.listed", 2.0, None, "P2", {}),
            Event("other", "product.listed", 3.0, None, "P3", {}),
            ev(10, "A"), ev(11, "B", "product.order"), ev(12, "A", "app.click"),
            Event("r1", "rule.created", 4.0, None, "x", {"name": "x"}),
        ])
        assert s.last_event() == (7, 4.0)
        assert s.event_id_prefixes("product.listed", 11) == ["aaaaaaaa-pP", "bbbbbbbb-pP", "other"]
        assert s.last_seq_of_types(["rule.created", "rule.deleted"]) == 7 and s.last_seq_of_types(["x"]) == 0
        first, last = s.first_of_type("product.listed"), s.last_of_type("product.listed")
        assert first is not None and last is not None
        assert (first.target_id, first.payload, last.target_id) == ("P1", {"price": 3.0}, "P3")
        assert s.distinct_targets(["product.listed", "product.order"]) == 4  # P1, P2, P3 and the order's U2
        assert s.distinct_users(["call", "product.order"], ["call"]) == 3  # A, B, and U2 (a call's target)
        assert s.first_recorded_after(6) == s.get("r1").recorded_at  # type: ignore[union-attr]
        events, seqs = s.read_batch(4, 6, 10)
        assert seqs == [4, 5, 6] and [e.event_id for e in events] == ["e10", "e11", "e12"]
        assert events[0].payload == {"duration": 10.0}
        cols = [c for c in s.read_columns(1, None, ["product.listed", "call"], ["product.listed"], chunk=2) if len(c)]
        assert [c.seq.tolist() for c in cols] == [[1, 2], [3, 4]]
        assert cols[1].payload[1] is None and list(cols[0].type) == ["product.listed"] * 2
        assert cols[0].payload[0] is not None and list(cols[1].user) == [None, "A"]


def test_projection_queries_behind_named_methods(store_db: DbLocation) -> None:
    import numpy as np

    with open_store(store_db) as s, s.transaction():
        s.profiles.upsert_many([("A", {"n": 1}, 5), ("B", {"n": 2}, 9)])
        assert s.profiles.last_seqs(["A", "B", "C"]) == {"A": 5, "B": 9}
        assert s.profiles.get_with_seq("B") == ({"n": 2}, 9) and s.profiles.get_with_seq("C") is None
        s.embeddings.put_many([("user", "A", np.ones(4, np.float32), 3, 5), ("user", "B", np.zeros(4, np.float32), 2, 9)])
        assert s.embeddings.dim("user") == 4 and s.embeddings.dim("app") is None
        assert [(nid, v.tolist(), seq) for nid, v, seq in s.embeddings.of_version("user", 3)] == [("A", [1.0] * 4, 5)]
        s.checkpoints.set("rules", 4)
        s.checkpoints.delete("rules")
        assert s.checkpoints.get("rules") == 0
        s.profiles.clear()
        assert s.profiles.count() == 0
    with open_store(store_db) as s:
        a = s.jobs.create("graph.refresh", {})
        job_id, busy = s.jobs.create_unless_busy("training.hgt", {}, ["graph.refresh", "training.hgt"])
        assert job_id is None and busy is not None and busy["id"] == a
        s.jobs.update(a, state="succeeded", result={"auc": 0.7}, finished_at=time.time())
        job_id, busy = s.jobs.create_unless_busy("training.hgt", {}, ["graph.refresh", "training.hgt"])
        assert job_id is not None and busy is None
        assert [r["id"] for r in s.jobs.all_active()] == [job_id]
        assert s.jobs.count_by_state() == {"queued": 1, "succeeded": 1}
        assert s.jobs.last_result("graph.refresh") == {"auc": 0.7} and s.jobs.last_result("fusion.train") is None
        first = s.ops.request("ingestion.stop")
        s.ops.record("db.switch", "switched", {"db": "/x.db"})
        assert s.ops.max_id() == first + 1
        assert [(r["command"], r["params"]) for r in s.ops.after(first - 1)] == [("ingestion.stop", "{}"), ("db.switch", '{"db":"/x.db"}')]
        latest = s.ops.latest("db.switch")
        assert latest is not None and latest["params"] == {"db": "/x.db"} and s.ops.latest("db.switch", first + 1) is None


def test_each_queued_job_is_claimed_by_one_claimer(store_db: DbLocation) -> None:
    """Four claimers (threads, each with its own store) take queued jobs at once: every job is claimed
    exactly once, by the claimer its row names, and a claimed job cannot be claimed again."""
    with open_store(store_db) as s:
        ids = [s.jobs.create("graph.refresh", {"i": i}) for i in range(40)]
        other = s.jobs.create("fusion.train", {})
    claims: list[tuple[str, str]] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        with open_store(db_arg(store_db)) as s:
            while (row := s.jobs.claim_next(["graph.refresh", "training.hgt"], name)) is not None:
                assert row["state"] == "running" and row["claimed_by"] == name and row["started_at"]
                with lock:
                    claims.append((row["id"], name))

    threads = [threading.Thread(target=claimer, args=(f"worker-{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(j for j, _ in claims) == sorted(ids)
    with open_store(store_db) as s:
        assert {s.jobs.get(j)["claimed_by"] for j, _ in claims} <= {f"worker-{k}" for k in range(4)}
        assert all(s.jobs.get(j)["claimed_by"] == who for j, who in claims)
        assert s.jobs.claim(ids[0], "late") is None  # running already
        assert s.jobs.get(other)["state"] == "queued"  # another kind: not taken
        row = s.jobs.claim(other, "late")
        assert row is not None and row["claimed_by"] == "late" and row["created_by"]


# ---------------------------------------------------------------- graph columns


def _coded_by_hand(s: Store) -> tuple[list[list[str]], list[tuple[int, int, int, int, float]]]:
    """The graph columns spelled out one event at a time: node ids per type in order of first
    appearance (subject before target), (kind, subject code, target code, seq, ts) per graph event."""
    refs = {"user.registered": ("user", "user_id", None), "user.updated": ("user", "user_id", None),
            "product.listed": ("product", "target_id", None), "app.listed": ("app", "target_id", None),
            "call": ("user", "user_id", "user"), "product.order": ("user", "user_id", "product"),
            "product.click": ("user", "user_id", "product"), "app.usage": ("user", "user_id", "app"),
            "app.click": ("user", "user_id", "app")}
    ids: dict[str, dict[str, int]] = {t: {} for t in GRAPH_NODE_TYPES}
    rows = []
    for e in s.read():
        if e.type not in refs:
            continue
        st, col, tt = refs[e.type]
        subj = ids[st].setdefault(getattr(e, col), len(ids[st]))
        tgt = ids[tt].setdefault(e.target_id, len(ids[tt])) if tt else -1
        rows.append((GRAPH_KINDS.index(e.type), subj, tgt, e.seq, e.ts))
    return [list(ids[t]) for t in GRAPH_NODE_TYPES], rows


def _columns(s: Store) -> tuple[int, list[list[str]], list[tuple[int, int, int, int, float]]]:
    d = s.graph_columns.read()
    return d.upto, d.node_ids, list(zip(d.kind.tolist(), d.subj.tolist(), d.tgt.tolist(), d.seq.tolist(), d.ts.tolist()))


def _graph_events(i: int) -> list[Event]:
    return [Event(f"r{i}", "user.registered", 1.0 + i, f"U{i}", None, {"age": 30}),
            Event(f"p{i % 3}", "product.listed", 2.0, None, f"P{i % 3}", {"price": 1.0}),
            Event(f"c{i}", "call", 3.5 + i, f"U{i}", f"U{i + 1}", {"duration": 1.0}),
            Event(f"l{i}", "label.observed", 4.0, f"U{i}", None, {"label": "churn", "value": 1}),
            Event(f"o{i}", "product.order", 5.25 + i, f"U{i + 1}", f"P{i % 2}", {"amount": 2.0}),
            Event(f"a{i}", "app.usage", 6.0, f"U{i}", "A1", {"duration": 3.0})]


def test_appends_keep_the_graph_columns_of_the_log(store_db: DbLocation) -> None:
    with open_store(store_db) as s, open_store(store_db) as other:
        for i in range(6):
            (s if i % 2 else other).append(_graph_events(i) + _graph_events(i - 1))  # repeats: duplicates
        s.append([ev(100, "U9")])
        s.append_columns(NewEvents.of_events(_graph_events(7) + [ev(101, "U1", "app.click")]))
        s.append_columns(NewEvents.of_events(_graph_events(5) + _graph_events(8) + _graph_events(8)))  # some there
        s.append([Event("x", "ops.note", 1.0)])  # no graph event: the blocks still reach the end
        nodes, rows = _coded_by_hand(s)
        assert _columns(s) == (s.last_seq(), nodes, rows)
        assert nodes[0][:3] == ["U0", "U1", "U-1"] and s.graph_columns.covered() == s.last_seq()


def test_a_rolled_back_append_leaves_no_graph_columns(store_db: DbLocation) -> None:
    with open_store(store_db) as s:
        s.append(_graph_events(0))
        with pytest.raises(RuntimeError), s.transaction():
            s.append(_graph_events(1) + [Event("n", "call", 1.0, "NEW", "U0", {"duration": 1.0})])
            raise RuntimeError("abort")
        s.append(_graph_events(2))
        nodes, rows = _coded_by_hand(s)
        assert "NEW" not in nodes[0] and _columns(s) == (s.last_seq(), nodes, rows)


def test_graph_columns_are_rebuilt_from_the_log_as_appends_wrote_them(store_db: DbLocation) -> None:
    with open_store(store_db) as s:
        for i in range(4):
            s.append(_graph_events(i))
        live = _columns(s)
        assert s.graph_columns.rebuild(chunk=5) == s.last_seq()
        assert _columns(s) == live


def test_graph_columns_coded_from_events_a_reader_holds_equal_those_the_appends_wrote(store_db: DbLocation) -> None:
    """What a replay does: it codes the graph columns from the batches it reads, not by reading again."""

    def columns_of(events: list[StoredEvent]) -> tuple[Any, ...]:
        return (np.array([e.seq for e in events], np.int64), [e.type for e in events], [e.user_id for e in events],
                [e.target_id for e in events], [e.ts for e in events])

    with open_store(store_db) as s:
        for i in range(4):
            s.append(_graph_events(i) + [Event(f"n{i}", "ops.note", 1.0)])
        live, last = _columns(s), s.last_seq()
        s.graph_columns.clear()
        events = list(s.read())
        mid = events[9].seq
        # a range past the blocks' end is left to catch_up: coding it would leave a gap
        assert s.graph_columns.extend(mid, last, *columns_of(events[10:])) == 0
        assert s.graph_columns.extend(0, mid, *columns_of(events[:10])) == mid
        # a range the blocks partly cover: only the events past their end are coded
        assert s.graph_columns.extend(0, last, *columns_of(events)) == last
        assert _columns(s) == live


def test_graph_columns_stop_before_an_event_they_cannot_code_and_catch_up_to_the_rest(store_db: DbLocation) -> None:
    with open_store(store_db) as s:
        s.append(_graph_events(0))
        covered = s.last_seq()
        s.append([Event("bad", "call", 1.0, None, "U1", {"duration": 1.0})])  # no subject (never validated)
        s.append(_graph_events(1))
        assert s.graph_columns.covered() == covered == s.graph_columns.read().upto
        assert s.graph_columns.catch_up() == covered  # the same event stops it again


def test_a_writer_that_joins_later_codes_the_nodes_it_finds_as_the_first_writer_did(store_db: DbLocation) -> None:
    with open_store(store_db) as first:
        first.append(_graph_events(0) + _graph_events(1))
    with open_store(store_db) as later:
        later.append([Event("x", "ops.note", 1.0)])  # no graph event: codes nothing
        later.append(_graph_events(2))  # U1 and U2 are known: their codes are the first writer's
        nodes, rows = _coded_by_hand(later)
        assert _columns(later) == (later.last_seq(), nodes, rows)


def test_compacted_graph_columns_read_the_same_and_appends_go_on_after_them(store_db: DbLocation) -> None:
    with open_store(store_db) as s:
        for i in range(8):
            s.append(_graph_events(i))  # one small block each
        before = _columns(s)
        assert s.graph_columns.compact(small=100, target=20) == 6  # 8 blocks of 5 graph events -> 2 of 20
        assert _columns(s) == before
        assert s.graph_columns.compact(small=100, target=20) == 0
        s.append(_graph_events(9))  # the writer's newest block was merged away: it reloads the dictionary
        nodes, rows = _coded_by_hand(s)
        assert _columns(s) == (s.last_seq(), nodes, rows)


def test_events_appended_one_at_a_time_or_in_one_batch_get_the_same_graph_columns(
    store_db: DbLocation, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [e for i in range(8) for e in _graph_events(i)] + [Event("app", "app.listed", 9.0, None, "A2", {})]
    with open_store(store_db) as s:
        for e in events:  # small appends: coded event by event
            s.append([e])
        one_by_one = _columns(s)
        nodes, rows = _coded_by_hand(s)
        assert one_by_one == (s.last_seq(), nodes, rows)
        monkeypatch.setattr(graph_columns, "_FEW", 0)  # however few: the log in one batch, coded as columns
        s.graph_columns.rebuild(chunk=10_000)
        assert _columns(s) == one_by_one
        s.append([Event("bad", "call", 10.0, None, "U1", {"duration": 1.0})])  # no subject: no block
        assert s.graph_columns.covered() == one_by_one[0]
