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
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from connectors.config import KafkaConfig
from connectors.errors import ConfigError
from connectors.events import DEFAULT_CLIP
from connectors.flink_kafka import parse_offsets
from flink_jobs.env import FlinkSettings
from flink_jobs.options import (
    add_clip_argument,
    add_flink_args,
    add_kafka_args,
    add_task_arguments,
    clip_from_args,
    fail_marker_from_args,
    flink_settings,
    hash_bits_from_args,
    kafka_config,
    task_limits,
)
from operators.ps import DEFAULT_MAX_TASKS
from operators.serving import MAX_REQUEST_AGE_MS, MAX_WAIT_MS

DELIVERIES = ("exactly-once", "at-least-once", "none")


@dataclass(frozen=True)
class ServeConfig:
    kafka: KafkaConfig
    flink: FlinkSettings = field(default_factory=FlinkSettings)
    run_id: str = field(default_factory=lambda: f"s-{uuid.uuid4().hex[:12]}")
    bits: int = 20
    replicas: int = 1
    max_pending: int = 10_000
    requests_topic: str = "requests"
    updates_topic: str = "model-updates"
    predictions_topic: str = "predictions"
    dead_letter_topic: str = "dead-letters"
    delivery: str = "at-least-once"
    follow_run: str | None = None
    init_model: str | None = None
    clip: float | None = DEFAULT_CLIP  # the training run's --clip-features
    ingest_window_ms: int = 5
    linger_ms: int = 5  # the predictions sink's producer
    max_request_age_ms: int = MAX_REQUEST_AGE_MS
    max_wait_ms: int = MAX_WAIT_MS
    tasks: tuple | None = None  # the tasks it may serve (None: any)
    max_tasks: int = DEFAULT_MAX_TASKS
    trace: bool = False
    stop_offsets: dict | None = None
    max_events: int | None = None
    summary_json: str | None = None
    timeout_s: float | None = None
    fail_marker: str | None = None  # tests only (--inject-failure)
    job_name: str = "streamshard-serve"

    def __post_init__(self) -> None:
        """Refuse, with one line naming the flag, settings no job can run with: checked
        however the config is made, from flags or in code."""
        from connectors.hashing import check_bits

        for name in ("replicas", "max_pending", "max_tasks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, "
                                  f"got {getattr(self, name)}")  # fmt: skip
        if self.ingest_window_ms < 1:
            raise ConfigError(f"--ingest-window must be >= 1 ms, got {self.ingest_window_ms}")
        if self.linger_ms < 0:
            raise ConfigError(f"--linger must be >= 0 ms, got {self.linger_ms}")
        if self.max_request_age_ms < 1 or self.max_wait_ms < 1:
            raise ConfigError("--max-request-age and --max-wait must be > 0 s")
        if self.max_events is not None and self.max_events < 1:
            raise ConfigError(f"--max-events must be >= 1, got {self.max_events}")
        if self.delivery not in DELIVERIES:
            raise ConfigError(f"--delivery must be one of {', '.join(DELIVERIES)}, "
                              f"got {self.delivery!r}")  # fmt: skip
        check_bits(self.bits)

    def serve_settings(self):
        from operators.serve_fn import ServeSettings

        return ServeSettings(
            run_id=self.run_id,
            bits=self.bits,
            replicas=self.replicas,
            max_pending=self.max_pending,
            requests_topic=self.requests_topic,
            follow_run=self.follow_run,
            init_model=self.init_model,
            clip=self.clip,
            max_request_age_ms=self.max_request_age_ms,
            max_wait_ms=self.max_wait_ms,
            tasks=self.tasks,
            max_tasks=self.max_tasks,
            trace=self.trace,
            fail_marker=self.fail_marker,
            checkpoint_dir=self.flink.checkpoint_dir,
        )


def build(env, cfg: ServeConfig):
    """Wire the serve job onto ``env``; returns the predictions stream."""
    from pyflink.common import Types

    from connectors.flink_kafka import (
        FEEDBACK_FETCH_MAX_WAIT_MS,
        LATENCY_FETCH_MAX_WAIT_MS,
        kafka_sink,
    )
    from connectors.ingest import event_batches, raw_records, table_env
    from operators.keyed import DEAD_LETTERS, PICKLED
    from operators.logistic import dimension
    from operators.ps_fn import fan_out_updates
    from operators.serve_fn import ParseRequests, ServeFunction

    s = cfg.serve_settings()
    t_env = table_env(env)
    # the table connector hands over bytes, tombstones and each record's partition and offset
    requests = event_batches(t_env, cfg.kafka, cfg.requests_topic, cfg.job_name,
                             cfg.stop_offsets, cfg.ingest_window_ms, cfg.flink.parallelism,
                             name="streamshard_requests",
                             **{"fetch.max.wait.ms": LATENCY_FETCH_MAX_WAIT_MS})  # fmt: skip
    updates = raw_records(t_env, "streamshard_serve_updates", cfg.kafka, cfg.updates_topic,
                          f"{cfg.job_name}-{cfg.run_id}",
                          **{"fetch.max.wait.ms": FEEDBACK_FETCH_MAX_WAIT_MS})  # fmt: skip
    parsed = requests.process(ParseRequests(s), output_type=PICKLED).name("parse").uid("parse")
    fanned = (
        updates.flat_map(
            fan_out_updates(s.replicas, dimension(s.bits), lambda row: (row[0],)),
            output_type=PICKLED,
        )  # fmt: skip
        .name("fan-out-updates")
        .uid("serve-fan-out-updates")
    )
    predictions = (
        parsed.connect(fanned)
        .key_by(lambda b: b.key, lambda u: u[0], key_type=Types.STRING())
        .process(ServeFunction(s), output_type=Types.STRING())
        .name("serve")
        .uid("serve")
    )
    predictions.sink_to(
        kafka_sink(
            cfg.kafka,
            cfg.predictions_topic,
            cfg.delivery,
            f"{cfg.run_id}-pred",
            low_latency=True,
            linger_ms=cfg.linger_ms,
        )  # fmt: skip
    ).name("predictions-sink").uid("predictions-sink")
    parsed.get_side_output(DEAD_LETTERS).union(predictions.get_side_output(DEAD_LETTERS)).sink_to(
        kafka_sink(cfg.kafka, cfg.dead_letter_topic, cfg.delivery, f"{cfg.run_id}-dlq")
    ).name("dead-letter-sink").uid("serve-dead-letter-sink")
    return predictions


def run(cfg: ServeConfig, on_running=None) -> dict | None:
    from connectors.admin import bounds, create_topics

    create_topics(cfg.kafka, [cfg.requests_topic, cfg.predictions_topic, cfg.dead_letter_topic])
    create_topics(cfg.kafka, [cfg.updates_topic], partitions=1)
    stop_offsets, expected = bounds(cfg.kafka, cfg.requests_topic, cfg.stop_offsets, cfg.max_events)
    if expected is None:  # unbounded: serve until cancelled (Ctrl-C)
        from flink_jobs.env import make_env

        env = make_env(cfg.flink)
        build(env, cfg)
        env.execute(cfg.job_name)
        return None
    from dataclasses import replace

    from flink_jobs.serve_run import run_bounded

    summary = run_bounded(replace(cfg, stop_offsets=stop_offsets), expected, on_running)
    if cfg.summary_json:
        public = {k: v for k, v in summary.items() if not k.startswith("_")}
        Path(cfg.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.summary_json).write_text(json.dumps(public, indent=2))
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hash-bits", type=int, default=20, help="the model's --hash-bits")
    parser.add_argument("--replicas", type=int, default=1, help="serving keys per task")
    parser.add_argument(
        "--max-pending",
        type=int,
        default=10_000,
        metavar="N",
        help="requests a replica holds while no model is known; more go to dead-letters",
    )
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
    parser.add_argument(
        "--trace", action="store_true",
        help="predictions carry when their batch was parsed and scored (where latency goes)",
    )  # fmt: skip
    parser.add_argument("--follow-run", metavar="RUN", help="serve this training run only")
    parser.add_argument("--inject-failure", metavar="MARKER", help=argparse.SUPPRESS)
    parser.add_argument("--requests-topic", default="requests")
    parser.add_argument("--updates-topic", default="model-updates")
    parser.add_argument("--predictions-topic", default="predictions")
    parser.add_argument("--dead-letter-topic", default="dead-letters")
    parser.add_argument("--delivery", default="at-least-once", choices=DELIVERIES)
    parser.add_argument("--max-events", type=int, metavar="N", help="stop after N requests")
    parser.add_argument("--stop-at-offsets", metavar="P=OFFSET,...")
    parser.add_argument("--summary-json", metavar="PATH")
    parser.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")
    parser.add_argument("--run-id", help="tags this job's predictions (default: random)")
    add_kafka_args(parser)
    # thread mode: no gRPC hop between the JVM and Python, a tenth of process mode's
    # time between parsing and scoring (docs/decisions/0006-python-execution-mode.md)
    add_flink_args(parser, bundle_time_ms=10, buffer_timeout_ms=5, execution_mode="thread")


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The flags as a ``ServeConfig`` (which checks them, ``ServeConfig.__post_init__``)."""
    # in seconds on the command line: checked here, before they become milliseconds
    if not args.max_request_age > 0:
        raise ConfigError(f"--max-request-age must be > 0 s, got {args.max_request_age}")
    if not args.max_wait > 0:
        raise ConfigError(f"--max-wait must be > 0 s, got {args.max_wait}")
    hash_bits_from_args(args)  # and the --init-model snapshot against it
    tasks, max_tasks = task_limits(args.tasks, args.max_tasks)
    cfg = ServeConfig(
        kafka=kafka_config(args),
        flink=(flink := flink_settings(args)),
        bits=args.hash_bits,
        replicas=args.replicas,
        max_pending=args.max_pending,
        requests_topic=args.requests_topic,
        updates_topic=args.updates_topic,
        predictions_topic=args.predictions_topic,
        dead_letter_topic=args.dead_letter_topic,
        delivery=args.delivery,
        follow_run=args.follow_run,
        init_model=str(Path(args.init_model).resolve()) if args.init_model else None,
        clip=clip_from_args(args),
        ingest_window_ms=args.ingest_window,
        linger_ms=args.linger,
        max_request_age_ms=int(args.max_request_age * 1000),
        max_wait_ms=max(1, int(args.max_wait * 1000)),
        tasks=tasks,
        max_tasks=max_tasks,
        trace=args.trace,
        stop_offsets=parse_offsets(args.stop_at_offsets) if args.stop_at_offsets else None,
        max_events=args.max_events,
        summary_json=args.summary_json,
        timeout_s=args.timeout,
        fail_marker=fail_marker_from_args(args, flink),
    )
    if args.run_id:
        from dataclasses import replace

        cfg = replace(cfg, run_id=args.run_id)
    return cfg


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
