"""``streamshard validate``: decode and validate events; good ones out, bad ones to dead-letters.

    events ──Kafka table──► ValidateFunction ──► OUTPUT (normalized events)
                                    └── side output ──► dead-letters (payload + reason)

Both sinks are exactly-once by default (Kafka transactions committed on checkpoints), so
every input record lands in exactly one of the two topics exactly once, even across restarts.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

from connectors.config import KafkaConfig
from connectors.flink_kafka import check_start, parse_offsets
from flink_jobs.env import FlinkSettings
from flink_jobs.options import (
    add_flink_args,
    add_kafka_args,
    fail_marker_from_args,
    flink_settings,
    kafka_config,
)


@dataclass(frozen=True)
class ValidateConfig:
    kafka: KafkaConfig
    flink: FlinkSettings = field(default_factory=FlinkSettings)
    input_topic: str = "events"
    output_topic: str = "events-valid"
    dead_letter_topic: str = "dead-letters"
    start: str = "earliest"
    stop_offsets: dict[int, int] | None = None
    guarantee: str = "exactly-once"
    job_name: str = "streamshard-validate"
    fail_marker: str | None = None  # tests only (--inject-failure)


def build(env, cfg: ValidateConfig):
    """Wire the validate pipeline onto ``env``; returns the stream of valid events."""
    from pyflink.common import Types

    from connectors.flink_kafka import kafka_sink
    from connectors.ingest import raw_records, table_env
    from operators.keyed import DEAD_LETTERS, side_output
    from operators.validate_fn import ValidateFunction

    # the table connector hands over bytes, tombstones and each record's partition and offset
    raw = raw_records(table_env(env), "streamshard_validate_events", cfg.kafka, cfg.input_topic,
                      cfg.job_name, cfg.start, cfg.stop_offsets)  # fmt: skip
    valid = (
        raw.process(
            ValidateFunction(
                cfg.input_topic,
                fail_marker=cfg.fail_marker,
                checkpoint_dir=cfg.flink.checkpoint_dir,
            ),
            output_type=Types.STRING(),
        )  # fmt: skip
        .name("validate")
        .uid("validate")
    )
    valid.sink_to(
        kafka_sink(cfg.kafka, cfg.output_topic, cfg.guarantee, f"{cfg.job_name}-out")
    ).name("valid-sink").uid("valid-sink")
    side_output(valid, DEAD_LETTERS).sink_to(
        kafka_sink(cfg.kafka, cfg.dead_letter_topic, cfg.guarantee, f"{cfg.job_name}-dlq")
    ).name("dead-letter-sink").uid("dead-letter-sink")
    return valid


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-topic", default="events")
    parser.add_argument("--output-topic", default="events-valid")
    parser.add_argument("--dead-letter-topic", default="dead-letters")
    parser.add_argument(
        "--start",
        default="earliest",
        help="earliest | latest | committed | timestamp:MS (default earliest)",
    )
    parser.add_argument(
        "--stop-at-offsets",
        metavar="P=OFFSET,...",
        help="stop when each partition reaches this end offset, e.g. 0=5000,1=5000 "
        "(`streamshard generate` prints it); default: run until cancelled",
    )
    parser.add_argument(
        "--delivery",
        default="exactly-once",
        choices=["exactly-once", "at-least-once", "none"],
        help="output delivery guarantee (default exactly-once)",
    )
    parser.add_argument("--inject-failure", metavar="MARKER", help=argparse.SUPPRESS)
    add_kafka_args(parser)
    add_flink_args(parser)


def config_from_args(args: argparse.Namespace) -> ValidateConfig:
    flink = flink_settings(args)
    return ValidateConfig(
        kafka=kafka_config(args),
        flink=flink,
        input_topic=args.input_topic,
        output_topic=args.output_topic,
        dead_letter_topic=args.dead_letter_topic,
        start=check_start(args.start),
        stop_offsets=parse_offsets(args.stop_at_offsets) if args.stop_at_offsets else None,
        guarantee=args.delivery,
        fail_marker=fail_marker_from_args(args, flink),
    )


def run(cfg: ValidateConfig) -> dict | None:
    """Run the job. A bounded run (``stop_offsets``) returns what became of its records:
    ``{"records": N, "dead_letters": D, "seconds": S}`` (``records`` is None unless the run
    starts at the earliest offsets, where the range it read is known)."""
    from connectors.admin import bounds, create_topics
    from flink_jobs.env import make_env

    create_topics(cfg.kafka, [cfg.output_topic, cfg.dead_letter_topic])
    records = None
    if cfg.stop_offsets is not None and cfg.start == "earliest":
        records = bounds(cfg.kafka, cfg.input_topic, cfg.stop_offsets, None)[1]
    env = make_env(cfg.flink)
    build(env, cfg)
    t0 = time.time()
    env.execute(cfg.job_name)
    if cfg.stop_offsets is None:
        return None
    return {
        "records": records,
        "dead_letters": dead_letters_since(cfg, int(t0 * 1000)),
        "seconds": time.time() - t0,
    }


def dead_letters_since(cfg: ValidateConfig, since_ms: int) -> int:
    """Committed dead letters of ``cfg.input_topic`` written at or after ``since_ms``."""
    import json

    from connectors.admin import read_records

    count = 0
    for record in read_records(cfg.kafka, cfg.dead_letter_topic, timeout=120, idle=1.0):
        try:
            doc = json.loads(record.value)
        except (TypeError, ValueError):
            continue
        if doc.get("topic") == cfg.input_topic and doc.get("time", 0) >= since_ms:
            count += 1
    return count
