"""Builders for Flink's Kafka source and sink from a :class:`~connectors.config.KafkaConfig`.

Only Java connector classes are used (through PyFlink's wrappers), so the same job runs on
the local mini-cluster and under ``flink run``; the connector jars come from the
``shigawire-apache-flink-libraries`` wheel, so no ``add_jars`` call is needed.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyflink.common import SimpleStringSchema
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)
from pyflink.java_gateway import get_gateway
from pyflink.util.java_utils import get_java_class

from connectors.config import KafkaConfig
from connectors.errors import ConfigError

GUARANTEES = {
    "none": DeliveryGuarantee.NONE,
    "at-least-once": DeliveryGuarantee.AT_LEAST_ONCE,
    "exactly-once": DeliveryGuarantee.EXACTLY_ONCE,
}
# Below Kafka's default transaction.max.timeout.ms (15 min); Flink's own default (1 h) is
# refused by a stock broker.
DEFAULT_TRANSACTION_TIMEOUT_MS = 600_000
LINGER_MS = "50"
BATCH_BYTES = str(1 << 20)  # the output sinks' producer batches (platform notes)
# Feedback edges (model updates) wait at most this long on an idle fetch. A fetch returns as
# soon as a record arrives (fetch.min.bytes 1), so this bounds only an idle poll, not latency.
# Not shorter: with 5 ms the embedded broker answered no fetch at all of a long partition (a
# 1,000,000-event run stalled at 490,000) while burning a core; with 20 ms or more it did.
FEEDBACK_FETCH_MAX_WAIT_MS = "100"


def parse_offsets(text: str) -> dict[int, int]:
    """``"0=500,1=480"`` -> ``{0: 500, 1: 480}`` (partition = end offset, exclusive)."""
    offsets = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            partition, offset = (int(x) for x in part.split("="))
        except ValueError as exc:
            raise ConfigError(f"offsets must look like 0=500,1=480, got {text!r}") from exc
        if partition < 0 or offset < 0:
            raise ConfigError(f"partitions and offsets must be >= 0, got {part!r}")
        offsets[partition] = offset
    if not offsets:
        raise ConfigError(f"offsets must look like 0=500,1=480, got {text!r}")
    return offsets


def _j_initializer():
    enumerator = get_gateway().jvm.org.apache.flink.connector.kafka.source.enumerator
    return enumerator.initializer.OffsetsInitializer


def explicit_offsets(topic: str, offsets: Mapping[int, int]) -> KafkaOffsetsInitializer:
    """Offsets per partition of ``topic``.

    Built here rather than with PyFlink's ``KafkaOffsetsInitializer.offsets``: that wrapper
    names the relocated ``org.apache.flink.kafka.shaded...TopicPartition`` of the SQL
    connector jar, while the connector jar installed here has plain ``kafka-clients``.
    """
    jvm = get_gateway().jvm
    # py4j turns Python ints into Integer; the wrapper converts the values to Long
    j_map = jvm.org.apache.flink.python.util.HashMapWrapper(None, get_java_class(jvm.Long))
    for partition, offset in offsets.items():
        j_map.put(jvm.org.apache.kafka.common.TopicPartition(topic, int(partition)), int(offset))
    return KafkaOffsetsInitializer(_j_initializer().offsets(j_map.asMap()))


def check_start(start: str) -> str:
    """Validate a start position before any JVM is started."""
    if start in ("earliest", "latest", "committed") or (
        start.startswith("timestamp:") and start[10:].isdigit()
    ):
        return start
    raise ConfigError(f"--start must be earliest, latest, committed or timestamp:MS, got {start!r}")


def starting_offsets(start: str) -> KafkaOffsetsInitializer:
    """``earliest``, ``latest``, ``committed`` (falls back to earliest) or ``timestamp:MS``."""
    check_start(start)
    if start == "earliest":
        return KafkaOffsetsInitializer.earliest()
    if start == "latest":
        return KafkaOffsetsInitializer.latest()
    if start == "committed":
        jvm = get_gateway().jvm
        earliest = jvm.org.apache.kafka.clients.consumer.OffsetResetStrategy.EARLIEST
        return KafkaOffsetsInitializer(_j_initializer().committedOffsets(earliest))
    return KafkaOffsetsInitializer.timestamp(int(start[10:]))


def kafka_source(
    cfg: KafkaConfig,
    topic: str,
    group_id: str,
    start: str = "earliest",
    stop_offsets: Mapping[int, int] | None = None,
    low_latency: bool = False,
) -> KafkaSource:
    """A string-valued source; bounded when ``stop_offsets`` (partition -> end) is given.

    Bounding by explicit offsets, not by "latest": the embedded broker answers ListOffsets
    "latest" wrongly, and explicit offsets make a run exactly reproducible on any broker.
    """
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(cfg.bootstrap_servers)
        .set_topics(topic)
        .set_group_id(group_id)
        .set_starting_offsets(starting_offsets(start))
        .set_value_only_deserializer(SimpleStringSchema())
        .set_property("partition.discovery.interval.ms", "-1" if stop_offsets else "60000")
    )
    for key, value in cfg.properties.items():
        builder.set_property(key, value)
    if low_latency:  # a feedback edge: an idle fetch waits 100 ms, not the default 500
        builder.set_property("fetch.max.wait.ms", FEEDBACK_FETCH_MAX_WAIT_MS)
    if stop_offsets:
        builder.set_bounded(explicit_offsets(topic, stop_offsets))
    return builder.build()


def kafka_sink(
    cfg: KafkaConfig,
    topic: str,
    guarantee: str = "exactly-once",
    transactional_id_prefix: str | None = None,
    transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
    low_latency: bool = False,
) -> KafkaSink:
    """A string-valued sink with the given delivery guarantee.

    ``exactly-once`` writes in Kafka transactions committed on each checkpoint: readers must
    use ``isolation.level=read_committed`` and see output one checkpoint interval late.
    """
    if guarantee not in GUARANTEES:
        raise ConfigError(
            f"delivery guarantee must be one of {sorted(GUARANTEES)}, got {guarantee!r}"
        )
    serializer = (
        KafkaRecordSerializationSchema.builder()
        .set_topic(topic)
        .set_value_serialization_schema(SimpleStringSchema())
        .build()
    )
    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(cfg.bootstrap_servers)
        .set_record_serializer(serializer)
        .set_delivery_guarantee(GUARANTEES[guarantee])
        .set_property("transaction.timeout.ms", str(transaction_timeout_ms))
    )
    # The embedded broker spends about a millisecond of CPU per request: batch the output
    # records (an exactly-once sink's records are visible only at the next checkpoint anyway).
    builder.set_property("linger.ms", "0" if low_latency else LINGER_MS)
    if not low_latency:  # the broker costs ~35 us per record at 16 KiB batches, ~9 at 1 MiB
        builder.set_property("batch.size", BATCH_BYTES)
    for key, value in cfg.properties.items():
        builder.set_property(key, value)
    if guarantee == "exactly-once":
        if not transactional_id_prefix:
            raise ConfigError("an exactly-once sink needs a transactional id prefix")
        builder.set_transactional_id_prefix(transactional_id_prefix)
    return builder.build()
