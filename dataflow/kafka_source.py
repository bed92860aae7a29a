"""Subscriber events from Kafka, through Bytewax's Kafka connector (confluent-kafka underneath).

Each topic partition is one partition of the Bytewax source, so Bytewax spreads them over the flow's
workers, and its resume state, the next offset, lives in the recovery snapshots: after a crash the
flow resumes every partition at the offset of its last snapshot, and the append being idempotent on
``event_id`` makes the replayed tail harmless. No consumer group commits anything (the connector
assigns partitions itself), so the snapshots are the only offsets that count.

A message's value is one event as JSON. The batch of one partition becomes one :class:`IngestBatch`
whose positions are the messages' offsets, so a message that is not a valid subscriber event lands in
dead letters as ``kafka:<topic>/<partition>`` with ``offset N: <reason>``, and the flow goes on.
A broker that goes away is librdkafka's to reconnect to; the partition waits and continues from its
position when the broker is back.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, KafkaException
from confluent_kafka.admin import AdminClient

from .control import FlowControl
from .sources import IngestBatch

log = logging.getLogger(__name__)

#: how long a partition that found no message waits before polling again (the connector polls with a
#: 1 ms timeout, so without a pause an idle topic would keep a core busy)
_IDLE = timedelta(milliseconds=20)
#: at most one warning per this many seconds for broker errors (they repeat while a broker is down)
_WARN_EVERY = 10.0


def _soon(delta: timedelta) -> datetime:
    return datetime.now(timezone.utc) + delta


class KafkaUnavailable(ValueError):
    """The brokers did not answer, or a topic is not there."""


class _KafkaPartition(StatefulSourcePartition[IngestBatch, int]):
    """One topic partition: the connector's partition, its messages batched as one IngestBatch."""

    def __init__(
        self, inner: StatefulSourcePartition[Any, Any], control: FlowControl, origin: str, offset: int
    ) -> None:
        self.inner = inner
        self.control = control
        self.origin = origin
        # Our own position rather than the connector's: it also advances past error events, whose
        # offset is not a message's (OFFSET_INVALID), and would then resume at the wrong place.
        self.offset = offset
        self._awake: datetime | None = None
        self._warned = 0.0

    def next_batch(self) -> list[IngestBatch]:
        if self.control.stopping:
            raise StopIteration
        if self.control.ingestion_paused:
            self._awake = _soon(timedelta(milliseconds=100))
            return []
        items: list[bytes | None] = []
        offsets: list[int] = []
        for msg in self.inner.next_batch():
            if isinstance(msg, KafkaError):
                self._error(msg)
                continue
            assert isinstance(msg, KafkaSourceMessage) and msg.offset is not None
            items.append(msg.value)
            offsets.append(msg.offset)
        if not items:
            self._awake = _soon(_IDLE)
            return []
        self._awake = None
        self.offset = offsets[-1] + 1
        return [IngestBatch(self.origin, items, offsets, "offset")]

    def _error(self, err: KafkaError[Any, Any]) -> None:
        if err.err.fatal():
            raise RuntimeError(f"Kafka consumer of {self.origin} failed: {err.err.str()}")
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            log.warning("Kafka %s: %s (retrying)", self.origin, err.err.str())

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self.offset

    def close(self) -> None:
        self.inner.close()


class KafkaIngest(FixedPartitionedSource[IngestBatch, int]):
    """Events from ``topics`` on ``brokers`` (``host:port``), read from the beginning of each partition
    on a fresh start. ``config`` adds librdkafka settings (security, timeouts)."""

    def __init__(
        self,
        brokers: list[str],
        topics: list[str],
        control: FlowControl,
        *,
        batch_size: int = 2000,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.control = control
        self.brokers, self.topics = list(brokers), list(topics)
        self.config = dict(config or {})
        self.connector = KafkaSource(
            brokers,
            topics,
            tail=True,
            starting_offset=OFFSET_BEGINNING,
            add_config=dict(config or {}),
            batch_size=batch_size,
            raise_on_errors=False,  # a broker error is waited out, not a reason to stop the flow
        )

    def check(self, timeout: float = 10.0) -> dict[str, int]:
        """Partitions per topic, or :class:`KafkaUnavailable` saying what is wrong (the connector
        itself would wait for the brokers forever)."""
        admin = AdminClient({"bootstrap.servers": ",".join(self.brokers), **self.config})
        where = ",".join(self.brokers)
        out: dict[str, int] = {}
        for topic in self.topics:
            try:
                meta = admin.list_topics(topic, timeout=timeout)
            except KafkaException as err:
                raise KafkaUnavailable(f"no Kafka broker answered at {where} within {timeout:g} s ({err})") from None
            info = meta.topics.get(topic)
            if info is None or info.error is not None or not info.partitions:
                why = info.error.str() if info is not None and info.error is not None else "no partitions"
                raise KafkaUnavailable(f"Kafka topic {topic!r} at {where}: {why}")
            out[topic] = len(info.partitions)
        return out

    def list_parts(self) -> list[str]:
        return self.connector.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaPartition:
        inner = self.connector.build_part(step_id, for_part, resume_state)
        idx, topic = for_part.split("-", 1)  # the connector names its partitions "<index>-<topic>"
        offset = resume_state if resume_state is not None else OFFSET_BEGINNING
        return _KafkaPartition(inner, self.control, f"kafka:{topic}/{idx}", offset)


__all__ = ["KafkaIngest", "KafkaUnavailable"]
