"""Flink's Kafka sink from a :class:`~connectors.config.KafkaConfig`, and the flags that bound
and start a read (the sources are table-connector tables: ``connectors/ingest.py``).

Only Java connector classes are used (through PyFlink's wrappers), so the same job runs on
the local mini-cluster and under ``flink run``; the connector jars come from the
``shigawire-apache-flink-libraries`` wheel, so no ``add_jars`` call is needed.
"""

from __future__ import annotations

from pyflink.common import SimpleStringSchema
from pyflink.common.serialization import ByteArraySchema
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

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
# Feedback edges (model updates) wait at most this long on a fetch. The embedded broker
# answers a waiting fetch when the wait is up (below), so this is part of the loop's round
# trip: 1 worker, 1 shard, sync did 18,911-20,412 events/s at 20 ms against 13,392-13,497 at
# 100 (decision 0005). Not shorter: with 5 ms the embedded broker answered no fetch at all of a
# long partition (a 1,000,000-event run stalled at 490,000) while burning a core.
FEEDBACK_FETCH_MAX_WAIT_MS = "20"
# The embedded broker does not answer a waiting fetch when a record arrives: it answers when
# fetch.max.wait.ms is up. A consumer 2 ms behind a producer saw p50/p99 122/257 ms at the
# default 500 ms, 17/56 at 100, 5.6/16 at 20 (docs/benchmarks.md). The serve job's request
# source waits at most this long.
LATENCY_FETCH_MAX_WAIT_MS = "20"


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


def check_start(start: str) -> str:
    """Validate a start position before any JVM is started."""
    if start in ("earliest", "latest", "committed") or (
        start.startswith("timestamp:") and start[10:].isdigit()
    ):
        return start
    raise ConfigError(f"--start must be earliest, latest, committed or timestamp:MS, got {start!r}")


def kafka_sink(
    cfg: KafkaConfig,
    topic: str,
    guarantee: str = "exactly-once",
    transactional_id_prefix: str | None = None,
    transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
    low_latency: bool = False,
    raw: bool = False,
    linger_ms: int = 0,
) -> KafkaSink:
    """A string-valued sink (``raw``: bytes-valued) with the given delivery guarantee;
    ``low_latency``: the producer lingers ``linger_ms`` only, with default batch sizes.

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
        .set_value_serialization_schema(ByteArraySchema() if raw else SimpleStringSchema())
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
    builder.set_property("linger.ms", str(linger_ms) if low_latency else LINGER_MS)
    if not low_latency:  # the broker costs ~35 us per record at 16 KiB batches, ~9 at 1 MiB
        builder.set_property("batch.size", BATCH_BYTES)
    for key, value in cfg.properties.items():
        builder.set_property(key, value)
    if guarantee == "exactly-once":
        if not transactional_id_prefix:
            raise ConfigError("an exactly-once sink needs a transactional id prefix")
        builder.set_transactional_id_prefix(transactional_id_prefix)
    return builder.build()
