"""``streamshard serve``: answer prediction requests with the model being trained.

::

    requests ─► gather ─► parse/hash ─► keyBy(task#replica) ─► SERVE ─► predictions (Kafka)
     (Kafka)   (Java)       └─► dead-letters                    ▲   └─► dead-letters (no model,
    model-updates ─► fan out to every replica of its task ──────┘        too many waiting)

Requests reach Python in batches: what arrived in the last ``--ingest-window`` milliseconds,
gathered in a Java window (``connectors/ingest.py``), decoded and hashed per batch and scored
with one numpy call per serving key. Each prediction carries the model (``model_run``,
``model_version``, ``model_age_ms``) that scored it and its latency from the request's
``ts``. Requests that come before any model wait in Flink state (``--max-pending`` per
replica) unless ``--init-model`` gives one at once.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from connectors.config import KafkaConfig
from connectors.errors import ConfigError
from connectors.flink_kafka import parse_offsets
from flink_jobs.env import FlinkSettings
from flink_jobs.options import (
    add_clip_argument,
    add_field_flags,
    add_flink_args,
    add_kafka_args,
    add_task_arguments,
    clip_from_args,
    fail_marker_from_args,
    fields_from_args,
    flink_settings,
    hash_bits_from_args,
    kafka_config,
    task_limits,
)
from operators.ps import DEFAULT_MAX_TASKS
from operators.serving import MAX_REQUEST_AGE_MS, MAX_WAIT_MS
from operators.settings import Bounds, ServeTopics, ServingSettings

DELIVERIES = ("exactly-once", "at-least-once", "none")


@dataclass(frozen=True)
class ServeConfig:
    """A serve job: where Kafka is, how Flink runs, and the settings of each concern
    (``operators.settings``), checked when made, from flags or in code."""

    kafka: KafkaConfig
    flink: FlinkSettings = field(default_factory=FlinkSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
    topics: ServeTopics = field(default_factory=ServeTopics)
    bounds: Bounds = field(default_factory=Bounds)
    run_id: str = field(default_factory=lambda: f"s-{uuid.uuid4().hex[:12]}")
    delivery: str = "at-least-once"
    init_model: str | None = None
    ingest_window_ms: int = 5
    linger_ms: int = 5  # the predictions sink's producer
    summary_json: str | None = None
    fail_marker: str | None = None  # tests only (--inject-failure)
    job_name: str = "streamshard-serve"

    def __post_init__(self) -> None:
        if self.ingest_window_ms < 1:
            raise ConfigError(f"--ingest-window must be >= 1 ms, got {self.ingest_window_ms}")
        if self.linger_ms < 0:
            raise ConfigError(f"--linger must be >= 0 ms, got {self.linger_ms}")
        if self.delivery not in DELIVERIES:
            raise ConfigError(f"--delivery must be one of {', '.join(DELIVERIES)}, "
                              f"got {self.delivery!r}")  # fmt: skip

    def serve_settings(self):
        """What the operators get: the serving settings themselves, with this job's
        identity."""
        from operators.serve_fn import ServeSettings

        return ServeSettings(
            run_id=self.run_id,
            serving=self.serving,
            requests_topic=self.topics.requests,
            init_model=self.init_model,
            fail_marker=self.fail_marker,
            checkpoint_dir=self.flink.checkpoint_dir,
        )

    def settings_for_summary(self) -> dict:
        """The settings, flat, as the summary shows them."""
        keep = ("bits", "replicas", "max_pending", "max_request_age_ms", "max_wait_ms",
                "follow_run")  # fmt: skip
        doc = {k: getattr(self.serving, k) for k in keep}
        doc.update(ingest_window_ms=self.ingest_window_ms, linger_ms=self.linger_ms,
                   delivery=self.delivery, init_model=self.init_model)  # fmt: skip
        doc.update({f"{k}_topic": getattr(self.topics, k)
                    for k in ("requests", "updates", "predictions")})  # fmt: skip
        return doc


def build(env, cfg: ServeConfig):
    """Wire the serve job onto ``env``; returns the predictions stream."""
    from pyflink.common import Types

    from connectors.flink_kafka import (
        FEEDBACK_FETCH_MAX_WAIT_MS,
        LATENCY_FETCH_MAX_WAIT_MS,
        kafka_sink,
    )
    from connectors.ingest import event_batches, raw_records, table_env
    from operators.keyed import DEAD_LETTERS, KEYED, keyed, side_output
    from operators.ps_fn import fan_out_updates
    from operators.serve_fn import ParseRequests, ServeFunction

    s = cfg.serve_settings()
    t_env = table_env(env)
    # the table connector hands over bytes, tombstones and each record's partition and offset
    requests = event_batches(t_env, cfg.kafka, cfg.topics.requests, cfg.job_name,
                             cfg.bounds.stop_offsets, cfg.ingest_window_ms, cfg.flink.parallelism,
                             name="streamshard_requests",
                             **{"fetch.max.wait.ms": LATENCY_FETCH_MAX_WAIT_MS})  # fmt: skip
    updates = raw_records(t_env, "streamshard_serve_updates", cfg.kafka, cfg.topics.updates,
                          f"{cfg.job_name}-{cfg.run_id}",
                          **{"fetch.max.wait.ms": FEEDBACK_FETCH_MAX_WAIT_MS})  # fmt: skip
    parsed = requests.process(ParseRequests(s), output_type=KEYED).name("parse").uid("parse")
    fanned = (
        updates.flat_map(
            fan_out_updates(s.serving.replicas, s.serving.dim, lambda row: (row[0],)),
            output_type=KEYED,
        )  # fmt: skip
        .name("fan-out-updates")
        .uid("serve-fan-out-updates")
    )
    predictions = (
        keyed(parsed)
        .connect(keyed(fanned))  # each record with its key (operators.keyed)
        .process(ServeFunction(s), output_type=Types.STRING())
        .name("serve")
        .uid("serve")
    )
    predictions.sink_to(
        kafka_sink(
            cfg.kafka,
            cfg.topics.predictions,
            cfg.delivery,
            f"{cfg.run_id}-pred",
            low_latency=True,
            linger_ms=cfg.linger_ms,
        )  # fmt: skip
    ).name("predictions-sink").uid("predictions-sink")
    side_output(parsed, DEAD_LETTERS).union(side_output(predictions, DEAD_LETTERS)).sink_to(
        kafka_sink(cfg.kafka, cfg.topics.dead_letters, cfg.delivery, f"{cfg.run_id}-dlq")
    ).name("dead-letter-sink").uid("serve-dead-letter-sink")
    return predictions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_field_flags(parser, ServingSettings)
    parser.add_argument(
        "--max-wait", type=float, default=MAX_WAIT_MS / 1000, metavar="S",
        help="a request held S seconds with no model for its task goes to dead-letters "
        f"(default {MAX_WAIT_MS // 1000})",
    )  # fmt: skip
    parser.add_argument("--init-model", metavar="DIR", help="start from this snapshot")
    add_task_arguments(parser, "serve", DEFAULT_MAX_TASKS)
    add_clip_argument(parser, "as the training run did")
    parser.add_argument(
        "--ingest-window", type=int, default=5, metavar="MS",
        help="gather the requests of MS milliseconds into one batch before Python (default 5)",
    )  # fmt: skip
    parser.add_argument(
        "--linger", type=int, default=5, metavar="MS",
        help="the predictions producer's linger.ms (default 5: fewer produce requests for "
        "the broker, the same latency; docs/benchmarks.md)",
    )  # fmt: skip
    parser.add_argument(
        "--max-request-age", type=float, default=MAX_REQUEST_AGE_MS / 1000, metavar="S",
        help="a request whose ts is more than S seconds old (or 5 min ahead) is answered "
        f"with latency_ms null (default {MAX_REQUEST_AGE_MS // 1000})",
    )  # fmt: skip
    parser.add_argument("--inject-failure", metavar="MARKER", help=argparse.SUPPRESS)
    add_field_flags(parser, ServeTopics)
    parser.add_argument("--delivery", default="at-least-once", choices=DELIVERIES)
    add_field_flags(parser, Bounds)
    parser.add_argument("--stop-at-offsets", metavar="P=OFFSET,...")
    parser.add_argument("--summary-json", metavar="PATH")
    parser.add_argument("--run-id", help="tags this job's predictions (default: random)")
    add_kafka_args(parser)
    # thread mode: no gRPC hop between the JVM and Python, a tenth of process mode's
    # time between parsing and scoring (docs/decisions/0006-python-execution-mode.md)
    add_flink_args(parser, bundle_time_ms=10, buffer_timeout_ms=5, execution_mode="thread")


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The flags as a ``ServeConfig`` (each settings object checks its own)."""
    # in seconds on the command line: checked here, before they become milliseconds
    if not args.max_request_age > 0:
        raise ConfigError(f"--max-request-age must be > 0 s, got {args.max_request_age}")
    if not args.max_wait > 0:
        raise ConfigError(f"--max-wait must be > 0 s, got {args.max_wait}")
    hash_bits_from_args(args)  # and the --init-model snapshot against it
    tasks, max_tasks = task_limits(args.tasks, args.max_tasks)
    serving = ServingSettings(
        **fields_from_args(ServingSettings, args),
        max_request_age_ms=int(args.max_request_age * 1000),
        max_wait_ms=max(1, int(args.max_wait * 1000)),
        clip=clip_from_args(args),
        tasks=tasks,
        max_tasks=max_tasks,
    )
    stops = parse_offsets(args.stop_at_offsets) if args.stop_at_offsets else None
    cfg = ServeConfig(
        kafka=kafka_config(args),
        flink=(flink := flink_settings(args)),
        serving=serving,
        topics=ServeTopics(**fields_from_args(ServeTopics, args)),
        bounds=Bounds(**fields_from_args(Bounds, args), stop_offsets=stops),
        delivery=args.delivery,
        init_model=str(Path(args.init_model).resolve()) if args.init_model else None,
        ingest_window_ms=args.ingest_window,
        linger_ms=args.linger,
        summary_json=args.summary_json,
        fail_marker=fail_marker_from_args(args, flink),
    )
    return replace(cfg, run_id=args.run_id) if args.run_id else cfg


def print_summary(summary: dict) -> None:
    lat = summary["latency_ms"]
    print(
        f"served {summary['predictions']:,} of {summary['requests']:,} requests in "
        f"{summary['seconds']:.1f}s; dead letters {summary['dead_letters']}; latency ms "
        + (f"p50 {lat['p50']:.0f} p95 {lat['p95']:.0f} p99 {lat['p99']:.0f}" if lat else "-")
        + f"; {summary['model_versions']} model versions"
        + (
            f"; {summary['ts_out_of_range']:,} with ts out of range (no latency)"
            if summary["ts_out_of_range"]
            else ""
        )
    )
    from operators.snapshot import retention_warning

    for task, gaps in sorted(summary["model_gaps"].items()):
        topic = summary["settings"]["updates_topic"]
        print(retention_warning(topic, task, gaps), file=sys.stderr)
