"""Writes the mock live stream into a Kafka topic (``ups produce``), so the Kafka path can be tried end
to end without an operator's feed.

The events are exactly those the mock source of ``ups dataflow`` emits (the same ids, ``<tag>-l<index>``),
one JSON object per message, keyed by user so that each user's events stay in order within one
partition. Producing a range twice is harmless: the flow's append ignores ids already in the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from config.settings import Settings

from .generator import LIVE_CHUNK, GeneratorConfig, MockGenerator
from .kafka_source import KafkaUnavailable


@dataclass(frozen=True, slots=True)
class ProduceSummary:
    topic: str
    partitions: int
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def ensure_topic(brokers: str, topic: str, partitions: int, timeout: float = 10.0) -> int:
    """Create ``topic`` with ``partitions`` when it is missing; its partition count either way."""
    admin = AdminClient({"bootstrap.servers": brokers})
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as err:
        raise KafkaUnavailable(f"no Kafka broker answered at {brokers} within {timeout:g} s ({err})") from None
    info = meta.topics.get(topic)
    if info is not None and info.error is None and info.partitions:
        return len(info.partitions)
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic]
    try:
        future.result(timeout=timeout)
    except KafkaException as err:
        if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise KafkaUnavailable(f"cannot create Kafka topic {topic!r} at {brokers}: {err}") from None
    return partitions


class _Delivery:
    """Counts what the broker acknowledged and keeps the first failure."""

    def __init__(self) -> None:
        self.done = 0
        self.error: str | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.done += 1
        elif self.error is None:
            self.error = err.str()


def produce_mock(
    settings: Settings,
    *,
    brokers: str,
    topic: str,
    events: int,
    start: int = 0,
    partitions: int = 4,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    timeout: float = 60.0,
) -> ProduceSummary:
    """Produce live events ``start .. start+events-1`` of the mock stream at ``rate`` events/s (default:
    as fast as the broker takes them); their event times are spaced by ``settings.live_rate``."""
    parts = ensure_topic(brokers, topic, partitions)
    gen = MockGenerator(GeneratorConfig.from_settings(settings))
    base_ts = settings.live_base_ts if settings.live_base_ts is not None else time.time()
    nominal = settings.live_rate
    delivery = _Delivery()
    producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "linger.ms": 20})
    t0 = time.perf_counter()
    index, end = start, start + events
    while index < end and delivery.error is None:
        chunk, skip = divmod(index, LIVE_CHUNK)
        batch = gen.live_chunk(chunk, base_ts, nominal)[skip : skip + end - index]
        for e in batch:
            while True:
                try:
                    producer.produce(topic, key=e.user_id, value=e.to_json(), on_delivery=delivery)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.1)
        producer.poll(0)
        index += len(batch)
        if progress is not None:
            progress(len(batch))
        if rate is not None:
            ahead = (index - start) / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
    left = producer.flush(timeout)
    if delivery.error is not None:
        raise KafkaUnavailable(f"Kafka refused events for topic {topic!r}: {delivery.error}")
    if left:
        raise KafkaUnavailable(f"{left:,} events not acknowledged by {brokers} within {timeout:g} s")
    return ProduceSummary(topic, parts, delivery.done, time.perf_counter() - t0)


__all__ = ["ProduceSummary", "ensure_topic", "produce_mock"]
