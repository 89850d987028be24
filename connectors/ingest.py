"""Raw Kafka records gathered into batches on the Java side, before Python sees them.

Every record that crosses PyFlink's Python bridge costs per-record plumbing (framing,
pickling, a function call, keyed-state bookkeeping) that dwarfs decoding and hashing one
small event. So the training job reads its topics with Flink's Kafka *table* connector and
lets a SQL tumbling window on processing time collect the raw lines in Flink's (Java) window
state: Python receives one record per window (per task and bucket for the events) instead of
one record per Kafka record (README, "Ingestion in batches").

Why the table connector and not the DataStream ``KafkaSource``:

- it exposes each record's partition and offset, so a bounded run ("stop at these offsets")
  is a filter on an unbounded source. A bounded source would end its input, and Flink drops
  pending processing-time windows when the input ends: a prototype here lost the last
  683 of 5,000 events that way;
- the window state is Flink state: checkpointed and restored with the source offsets, so a
  crash loses or doubles nothing that was gathered and not yet handed on.
"""

from __future__ import annotations

from collections.abc import Mapping

from connectors.config import KafkaConfig
from connectors.errors import ConfigError
from connectors.flink_kafka import FEEDBACK_FETCH_MAX_WAIT_MS


def table_env(env):
    """The table environment the gathering windows are declared in (one per job)."""
    from pyflink.table import StreamTableEnvironment

    return StreamTableEnvironment.create(env)


def _kafka_table(t_env, name: str, kafka: KafkaConfig, topic: str, group_id: str,
                 start: str = "earliest", stop_offsets: Mapping[int, int] | None = None,
                 **options) -> None:  # fmt: skip
    """Declare ``name``: the raw records of ``topic`` as bytes (``line``; NULL for a
    tombstone; never decoded on the Java side, so bytes that are not UTF-8 reach the decoder
    and the dead letters unchanged), with their partition (``part``), offset (``off``) and
    processing time (``pt``); from ``start``, and bounded by ``stop_offsets`` when given."""
    from pyflink.table import DataTypes, Schema, TableDescriptor

    schema = (
        Schema.new_builder()
        .column("line", DataTypes.BYTES())
        .column_by_metadata("part", DataTypes.INT(), "partition", True)
        .column_by_metadata("off", DataTypes.BIGINT(), "offset", True)
        .column_by_expression("pt", "PROCTIME()")
        .build()
    )
    descriptor = (
        TableDescriptor.for_connector("kafka")
        .schema(schema)
        .format("raw")
        .option("topic", topic)
        .option("properties.bootstrap.servers", kafka.bootstrap_servers)
        .option("properties.group.id", group_id)
    )
    scan = {**startup_options(start), **bounded_options(stop_offsets)}
    for key, value in {**scan, **{f"properties.{k}": v for k, v in kafka.properties.items()},
                       **{f"properties.{k}": v for k, v in options.items()}}.items():  # fmt: skip
        descriptor = descriptor.option(key, str(value))
    t_env.create_temporary_table(name, descriptor.build())


def startup_options(start: str) -> dict[str, str]:
    """The table connector's options for ``--start`` (``earliest``, ``latest``,
    ``committed`` falling back to earliest, or ``timestamp:MS``), or ``offset:N`` (partition
    0 from offset N: a one-partition topic).

    >>> startup_options("timestamp:1700000000000")["scan.startup.timestamp-millis"]
    '1700000000000'
    >>> startup_options("offset:42")["scan.startup.specific-offsets"]
    'partition:0,offset:42'
    """
    if start == "earliest":
        return {"scan.startup.mode": "earliest-offset"}
    if start == "latest":
        return {"scan.startup.mode": "latest-offset"}
    if start == "committed":
        return {"scan.startup.mode": "group-offsets", "properties.auto.offset.reset": "earliest"}
    if start.startswith("timestamp:") and start[10:].isdigit():
        return {"scan.startup.mode": "timestamp", "scan.startup.timestamp-millis": start[10:]}
    if start.startswith("offset:") and start[7:].isdigit():
        return {"scan.startup.mode": "specific-offsets",
                "scan.startup.specific-offsets": f"partition:0,offset:{start[7:]}"}  # fmt: skip
    raise ConfigError(f"unknown start {start!r}")


def bounded_options(stop_offsets: Mapping[int, int] | None) -> dict[str, str]:
    """The options that end the table's input at ``stop_offsets`` (partition -> end offset).

    >>> bounded_options({0: 10, 1: 3})["scan.bounded.specific-offsets"]
    'partition:0,offset:10;partition:1,offset:3'
    >>> bounded_options(None)
    {}
    """
    if not stop_offsets:
        return {}
    spec = ";".join(f"partition:{int(p)},offset:{int(o)}" for p, o in sorted(stop_offsets.items()))
    return {"scan.bounded.mode": "specific-offsets", "scan.bounded.specific-offsets": spec}


def raw_records(t_env, name: str, kafka: KafkaConfig, topic: str, group_id: str,
                start: str = "earliest", stop_offsets: Mapping[int, int] | None = None,
                **options):  # fmt: skip
    """A DataStream of ``Row(line, part, off)``, one per Kafka record of ``topic``: the raw
    value as bytes (None for a tombstone) with its partition and offset. Bounded (the job
    ends) when ``stop_offsets`` is given."""
    _kafka_table(t_env, name, kafka, topic, group_id, start, stop_offsets, **options)
    return t_env.to_data_stream(t_env.sql_query(f"SELECT line, part, off FROM {name}"))


def _window(name: str, window_ms: int) -> str:
    return f"TABLE(TUMBLE(TABLE {name}, DESCRIPTOR(pt), INTERVAL '{window_ms / 1000:.3f}' SECOND))"


def event_batches(
    t_env,
    kafka: KafkaConfig,
    topic: str,
    group_id: str,
    stop_offsets: Mapping[int, int] | None,
    window_ms: int,
    buckets: int,
    name: str = "streamshard_events",
    **options,
):
    """A DataStream of ``Row(task, lines, partitions, offsets)``: the raw records of
    ``topic`` (declared as table ``name``, with the consumer properties ``options``; from the
    earliest offset, below ``stop_offsets`` when given) gathered per bucket for ``window_ms``
    milliseconds of processing time, in the order they were read, with the partition and
    offset of each (for the dead letters).

    ``buckets`` spreads the events over that many window keys (by partition and offset), so
    that with parallelism > 1 the gathering and the parsing after it run on every subtask.
    The key reads nothing of the record: the parser finds each event's task, so the SQL side
    neither parses JSON nor hashes lines (``JSON_VALUE`` and an ``MD5`` bucket cost the JVM
    about 23 µs per event; platform notes). ``task`` is ``''`` in every row.
    """
    _kafka_table(t_env, name, kafka, topic, group_id, **options)
    bucket = f", MOD(part + off, {buckets})" if buckets > 1 else ""
    query = f"""
        SELECT '' AS task, ARRAY_AGG(line) AS lines, ARRAY_AGG(part) AS parts,
               ARRAY_AGG(off) AS offs
        FROM {_window(name, window_ms)}
        {offset_filter(stop_offsets)}
        GROUP BY window_start, window_end{bucket}
    """
    return t_env.to_data_stream(t_env.sql_query(query))


def record_batches(t_env, kafka: KafkaConfig, topic: str, group_id: str,
                   stop_offsets: Mapping[int, int] | None, name: str = "streamshard_records",
                   **options):  # fmt: skip
    """``event_batches``' rows, one per Kafka record, not gathered: for records that carry
    many events each (``--input-format ndjson``), which need no window to reach Python in
    batches."""
    _kafka_table(t_env, name, kafka, topic, group_id, **options)
    query = f"""
        SELECT '' AS task, ARRAY[line] AS lines, ARRAY[part] AS parts, ARRAY[off] AS offs
        FROM {name} {offset_filter(stop_offsets)}
    """
    return t_env.to_data_stream(t_env.sql_query(query))


def update_batches(t_env, kafka: KafkaConfig, topic: str, group_id: str, window_ms: int,
                   start_offset: int | None = None):  # fmt: skip
    """A DataStream of ``Row(lines)``: the records of the model-updates ``topic`` gathered
    for ``window_ms`` milliseconds, in topic order (the topic has one partition), from
    ``start_offset`` (default: the earliest) unless a checkpoint says where."""
    wait = {"fetch.max.wait.ms": FEEDBACK_FETCH_MAX_WAIT_MS}  # a feedback edge
    start = "earliest" if start_offset is None else f"offset:{int(start_offset)}"
    _kafka_table(t_env, "streamshard_updates", kafka, topic, group_id, start, **wait)
    query = f"""
        SELECT ARRAY_AGG(line) AS lines
        FROM {_window("streamshard_updates", window_ms)}
        GROUP BY window_start, window_end
    """
    return t_env.to_data_stream(t_env.sql_query(query))


def offset_filter(stop_offsets: Mapping[int, int] | None) -> str:
    """The SQL ``WHERE`` clause that keeps the records below ``stop_offsets`` (partition ->
    end offset, exclusive); empty for an unbounded run.

    >>> offset_filter({0: 10, 1: 0})
    'WHERE (part = 0 AND off < 10) OR (part = 1 AND off < 0)'
    >>> offset_filter(None)
    ''
    """
    if stop_offsets is None:
        return ""
    kept = [f"(part = {int(p)} AND off < {int(o)})" for p, o in sorted(stop_offsets.items())]
    return "WHERE " + (" OR ".join(kept) or "FALSE")
