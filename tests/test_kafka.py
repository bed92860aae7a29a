"""Kafka in: `ups produce` writes the mock stream into a topic, `ups dataflow --source kafka` appends it
(real processes against librdkafka's mock cluster in this test process).

Every produced event is in the log exactly once, bad messages are dead letters naming topic, partition
and offset, a clean restart resumes from the offsets in the recovery snapshots, a SIGKILL and restart
loses and doubles nothing, and a broker that goes away and comes back is waited for."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from kafka_mock import MockKafka  # tests/ is on sys.path (pytest rootdir import)
from test_replay import projection_rows

from config.settings import Settings
from dataflow.generator import GeneratorConfig
from dataflow.runner import replay

TOPIC = "subscriber-events"
SMALL = {"users": 300, "products": 20, "apps": 12, "events_per_user": 15, "seed": 7, "profile_shards": 16}


@pytest.fixture
def kafka() -> Iterator[MockKafka]:
    cluster = MockKafka()
    cluster.create_topic(TOPIC, 3)
    yield cluster
    cluster.close()


def _env(db: Path, kafka: MockKafka) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        UPS_DB=str(db), UPS_STATE_DIR=str(db.parent / "state"), UPS_USERS="300", UPS_PRODUCTS="20",
        UPS_APPS="12", UPS_EVENTS_PER_USER="15", UPS_SEED="7", UPS_BATCH_SIZE="500", UPS_SNAPSHOT_INTERVAL="0.3",
        UPS_FLUSH_INTERVAL="0.2", UPS_PROFILE_SHARDS="16", UPS_STATUS_INTERVAL="0.5", UPS_LIVE_BASE_TS="1767225600",
        UPS_KAFKA_BROKERS=kafka.bootstrap, UPS_KAFKA_TOPIC=TOPIC,
    )
    return env


def _produce(db: Path, kafka: MockKafka, events: int, start: int = 0) -> None:
    cmd = [sys.executable, "-m", "ups", "produce", "--events", str(events), "--start", str(start), "--quiet"]
    out = subprocess.run(cmd, env=_env(db, kafka), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"produced {events:,} events into {TOPIC} (3 partitions)" in out.stdout


def _flow(db: Path, kafka: MockKafka, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "ups", "dataflow", "--source", "kafka", "--quiet", *extra]
    return subprocess.Popen(cmd, env=_env(db, kafka), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _query(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # the flow has not made the schema yet
            return []


def _wait(what: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not what():
        assert proc.poll() is None, f"the flow exited ({proc.returncode}): {proc.communicate()[1][-3000:]}"
        assert time.time() < deadline, "timed out waiting for the flow"
        time.sleep(0.05)


def _events(db: Path) -> int:
    rows = _query(db, "SELECT count(*) FROM events")
    return rows[0][0] if rows else 0


def _running(db: Path, pid: int) -> bool:
    rows = _query(db, "SELECT json_extract(data, '$.pid'), json_extract(data, '$.state') FROM status "
                      "WHERE component = 'dataflow'")
    return bool(rows) and tuple(rows[0]) == (pid, "running")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    return out


def _live_ids(n: int) -> set[str]:
    tag = GeneratorConfig.from_settings(Settings(**SMALL)).tag
    return {f"{tag}-l{i}" for i in range(n)}


def _assert_log_exact(db: Path, n: int) -> None:
    ids = [r[0] for r in _query(db, "SELECT event_id FROM events ORDER BY seq")]
    assert len(ids) == n and set(ids) == _live_ids(n), "events missing or appended twice"
    assert _query(db, "SELECT min(seq), max(seq) FROM events") == [(1, n)]  # no gaps


def _assert_projections_equal_replay(db: Path, tmp_path: Path) -> None:
    clean = tmp_path / "clean.db"
    replay(Settings(db=db, **SMALL), into=clean)
    assert projection_rows(clean) == projection_rows(db)


def test_flow_appends_the_topic_once_and_dead_letters_bad_messages(tmp_path: Path, kafka: MockKafka) -> None:
    db = tmp_path / "ups.db"
    _produce(db, kafka, 2000)
    bad = Producer({"bootstrap.servers": kafka.bootstrap})
    bad.produce(TOPIC, value=b"not json at all", partition=1)
    bad.produce(TOPIC, value=b'{"type": "call", "user_id": "u1"}', partition=2)
    assert bad.flush(10) == 0
    del bad
    proc = _flow(db, kafka, "--workers", "2")  # three partitions over two workers
    _wait(lambda: _events(db) >= 2000 and len(_query(db, "SELECT id FROM dead_letters")) >= 2, proc)
    out = _stop(proc)
    assert "2,000 events appended" in out and "dead letters 2" in out
    _assert_log_exact(db, 2000)
    letters = sorted(_query(db, "SELECT source, reason, raw FROM dead_letters"))
    # each bad message is the last of its partition
    (src1, why1, raw1), (src2, why2, raw2) = letters
    assert src1 == f"kafka:{TOPIC}/1" and raw1 == "not json at all" and "not JSON" in why1
    assert src2 == f"kafka:{TOPIC}/2" and "event_id" in why2 and '"user_id": "u1"' in raw2
    offsets = _partition_sizes(kafka)
    assert why1.startswith(f"offset {offsets[1] - 1}: ") and why2.startswith(f"offset {offsets[2] - 1}: ")
    _assert_projections_equal_replay(db, tmp_path)

    # a clean restart resumes at the snapshots' offsets: nothing is read twice (dead letters, which
    # are not deduplicated, would be), and what was produced meanwhile is appended
    _produce(db, kafka, 500, start=2000)
    proc = _flow(db, kafka)
    _wait(lambda: _events(db) >= 2500, proc)
    time.sleep(1.0)  # room for a wrong re-read from offset 0 to show
    _stop(proc)
    _assert_log_exact(db, 2500)
    assert len(_query(db, "SELECT id FROM dead_letters")) == 2


def _partition_sizes(kafka: MockKafka) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "sizes"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1] for p in range(3)}
    finally:
        c.close()


@pytest.mark.slow
def test_broker_away_and_back_is_waited_for(tmp_path: Path, kafka: MockKafka) -> None:
    db = tmp_path / "ups.db"
    _produce(db, kafka, 1000)
    proc = _flow(db, kafka)
    _wait(lambda: _events(db) >= 1000, proc)
    kafka.broker_down()
    time.sleep(3.0)
    assert proc.poll() is None, "the flow stopped while the broker was away"
    kafka.broker_up()
    _produce(db, kafka, 1000, start=1000)
    _wait(lambda: _events(db) >= 2000, proc)
    _stop(proc)
    _assert_log_exact(db, 2000)


def test_unreachable_broker_is_a_clear_error(tmp_path: Path, kafka: MockKafka) -> None:
    env = _env(tmp_path / "ups.db", kafka)
    cmd = [sys.executable, "-m", "ups", "dataflow", "--source", "kafka", "--brokers", "127.0.0.1:1", "--quiet"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)  # nothing listens on port 1
    assert out.returncode == 2 and "no Kafka broker answered at 127.0.0.1:1" in out.stderr


@pytest.mark.slow
def test_sigkill_and_restart_appends_every_event_once(tmp_path: Path, kafka: MockKafka) -> None:
    db = tmp_path / "ups.db"
    n = 6000
    _produce(db, kafka, n)
    for point in (1500, 4000):
        proc = _flow(db, kafka)
        _wait(lambda point=point: _events(db) >= point, proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    proc = _flow(db, kafka)
    # the last kill may come after the whole topic is in: wait for this run's own "running" too
    _wait(lambda: _events(db) >= n and _running(db, proc.pid), proc)
    _stop(proc)
    _assert_log_exact(db, n)
    _assert_projections_equal_replay(db, tmp_path)
