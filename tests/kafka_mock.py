"""librdkafka's mock Kafka cluster, in the test process, with the controls its own test suite uses.

A client configured with ``test.mock.num.brokers`` starts one too, but confluent-kafka offers no way to
create a topic with N partitions on it (CreateTopics waits for a controller the mock never names) or
to take a broker down. librdkafka exports the mock API (``rd_kafka_mock_*``) from the very library
confluent-kafka ships, so ctypes reaches it. The cluster speaks the real Kafka protocol on 127.0.0.1;
``ups`` processes started by a test connect to :attr:`MockKafka.bootstrap` like to any broker.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import confluent_kafka


def _librdkafka() -> ctypes.CDLL:
    pkg = Path(confluent_kafka.__file__).parent
    found = sorted((pkg.parent / "confluent_kafka.libs").glob("librdkafka*.so*")) or sorted(pkg.glob("librdkafka*.so*"))
    lib = ctypes.CDLL(str(found[0]) if found else "librdkafka.so.1")
    vp, cp, i32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32
    lib.rd_kafka_conf_new.restype = vp
    lib.rd_kafka_conf_set.argtypes = [vp, cp, cp, cp, ctypes.c_size_t]
    lib.rd_kafka_new.restype = vp
    lib.rd_kafka_new.argtypes = [ctypes.c_int, vp, cp, ctypes.c_size_t]
    lib.rd_kafka_destroy.argtypes = [vp]
    lib.rd_kafka_mock_cluster_new.restype = vp
    lib.rd_kafka_mock_cluster_new.argtypes = [vp, ctypes.c_int]
    lib.rd_kafka_mock_cluster_destroy.argtypes = [vp]
    lib.rd_kafka_mock_cluster_bootstraps.restype = cp
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [vp]
    lib.rd_kafka_mock_topic_create.argtypes = [vp, cp, ctypes.c_int, ctypes.c_int]
    lib.rd_kafka_mock_broker_set_down.argtypes = [vp, i32]
    lib.rd_kafka_mock_broker_set_up.argtypes = [vp, i32]
    return lib


class MockKafka:
    """One mock broker (id 1) until :meth:`close`."""

    BROKER = 1

    def __init__(self) -> None:
        self._lib = lib = _librdkafka()
        err = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        lib.rd_kafka_conf_set(conf, b"log_level", b"0", err, 512)  # its own client's logs: none
        self._rk = lib.rd_kafka_new(1, conf, err, 512)  # a consumer-type handle owns the cluster
        if not self._rk:
            raise RuntimeError(err.value.decode())
        self._cluster = lib.rd_kafka_mock_cluster_new(self._rk, 1)
        if not self._cluster:
            raise RuntimeError("librdkafka could not start a mock cluster")
        self.bootstrap: str = lib.rd_kafka_mock_cluster_bootstraps(self._cluster).decode()

    def create_topic(self, name: str, partitions: int) -> None:
        code = self._lib.rd_kafka_mock_topic_create(self._cluster, name.encode(), partitions, 1)
        if code != 0:
            raise RuntimeError(f"mock topic {name!r} not created (error {code})")

    def broker_down(self) -> None:
        """Drop the broker's connections and refuse new ones, as a broker that went away."""
        self._lib.rd_kafka_mock_broker_set_down(self._cluster, self.BROKER)

    def broker_up(self) -> None:
        self._lib.rd_kafka_mock_broker_set_up(self._cluster, self.BROKER)

    def close(self) -> None:
        if self._cluster:
            self._lib.rd_kafka_mock_cluster_destroy(self._cluster)
            self._lib.rd_kafka_destroy(self._rk)
            self._cluster = self._rk = None
