"""``streamshard train``: online logistic regression through a parameter server in Flink state.

::

    events ─► window ─► parse/hash ─► keyBy(task#worker) ─► WORKER ─push─► keyBy(shard) ─► SHARD
    (Kafka)  (Java, per       └─► dead-letters                  ▲                            │
             task, 50 ms)                    fan out to every worker ◄── model-updates ◄─────┘
    WORKER ─► train-predictions (Kafka)                                   (Kafka, feedback)
           └► keyBy(task) ─► EVALUATOR ─► metrics (Kafka)

``--engine local`` runs the same math in this process, without Flink: the yardstick.
"""

from __future__ import annotations

import argparse
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
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
from operators.drift import DRIFT_DONE
from operators.evaluation import metric_text
from operators.ps import DEFAULT_MAX_TASKS
from operators.settings import Bounds, LoopSettings, ModelSettings, TrainTopics

HYPER = ("alpha", "beta", "l1", "l2", "lr")
# how long model updates are gathered before the workers get them (one record per window):
# short, it is part of the feedback loop's latency
UPDATE_WINDOW_MS = 10
# Network buffers of 8 KiB instead of Flink's 32 KiB on the local mini-cluster. The job is bound
# on its one Python process, so the queue in front of the shards fills up to what the buffers
# hold, and every push in that queue is a mini-batch the other worker's replica lacks: with
# 32 KiB the staleness grew to p50 12-22 mini-batches over 60,000 events (AUC 0.7533-0.7576),
# with 8 KiB it stayed at 7-11 (AUC 0.7622; local reference 0.7651), for 20% fewer events/s
# (README, Throughput). A TaskManager setting: on a cluster, set it in the cluster's config.
LOCAL_OPTIONS = (("taskmanager.memory.segment-size", "8kb"),)


ENGINES = ("flink", "local")
DELIVERIES = ("exactly-once", "at-least-once", "none")


@dataclass(frozen=True)
class TrainConfig:
    """A training run: where Kafka is, how Flink runs, and the settings of each concern
    (``operators.settings``), checked when made, from flags or in code."""

    kafka: KafkaConfig
    flink: FlinkSettings = field(default_factory=FlinkSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    loop: LoopSettings = field(default_factory=LoopSettings)
    topics: TrainTopics = field(default_factory=TrainTopics)
    bounds: Bounds = field(default_factory=Bounds)
    engine: str = "flink"
    run_id: str = field(default_factory=lambda: f"r-{uuid.uuid4().hex[:12]}")
    ingest_window_ms: int = 50
    window: int = 10_000
    delivery: str = "exactly-once"
    summary_json: str | None = None
    fail_marker: str | None = None
    init_model: str | None = None
    digest_topic: str | None = None
    job_name: str = "streamshard-train"

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ConfigError(f"--window must be >= 1, got {self.window}")
        if self.ingest_window_ms < 1:
            raise ConfigError(f"--ingest-window must be >= 1 ms, got {self.ingest_window_ms}")
        for flag, value, allowed in (("--engine", self.engine, ENGINES),
                                     ("--delivery", self.delivery, DELIVERIES)):  # fmt: skip
            if value not in allowed:
                raise ConfigError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
        if self.topics.batched and self.bounds.max_events is not None:
            raise ConfigError(f"--input-format {self.topics.input_format} counts events inside "
                              "records: bound the run with --stop-at-offsets instead of "
                              "--max-events")  # fmt: skip

    def ps_settings(self):
        """What the operators get: the model's, the loop's and the topics' settings
        themselves, with this run's identity."""
        from operators.ps_fn import PsSettings

        return PsSettings(
            run_id=self.run_id,
            model=self.model,
            loop=self.loop,
            topics=self.topics,
            fail_marker=self.fail_marker,
            checkpoint_dir=self.flink.checkpoint_dir,
            init_model=self.init_model,
            digests=bool(self.digest_topic),
        )

    def settings_for_summary(self) -> dict:
        """Every setting, flat, as the summary and the report show them."""
        doc = {**asdict(self.model), **asdict(self.loop), **asdict(self.bounds)}
        doc["hyper"] = dict(self.model.hyper)
        doc.update({TOPIC_KEYS.get(k, k): v for k, v in asdict(self.topics).items()})
        skip = ("kafka", "flink", "fail_marker", "model", "loop", "topics", "bounds")
        doc.update({f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip})
        doc["stop_offsets"] = {str(p): o for p, o in (self.bounds.stop_offsets or {}).items()}
        doc["stop_offsets"] = doc["stop_offsets"] or None
        doc["flink"] = asdict(self.flink)
        doc["kafka"] = {"bootstrap_servers": self.kafka.bootstrap_servers}
        return doc


# the summary's names of the topics
TOPIC_KEYS = {"input": "input_topic", "updates": "updates_topic", "metrics": "metrics_topic",
              "predictions": "predictions_topic", "dead_letters": "dead_letter_topic"}  # fmt: skip


def build(env, cfg: TrainConfig):
    """Wire the training job onto ``env``: the parser and the fan-out of model updates, the
    parameter server (workers and shards), then the outputs; returns the shards' stream."""
    s = cfg.ps_settings()
    parsed, fanned = _inputs(env, cfg, s)
    workers, shards = _parameter_server(parsed, fanned, s)
    _outputs(cfg, parsed, workers, shards)
    return shards


def _inputs(env, cfg: TrainConfig, s):
    """Events parsed (dead letters to their topic) and model updates fanned out to the
    workers; both reach Python in batches gathered in Java window state
    (connectors/ingest.py)."""
    from connectors.flink_kafka import kafka_sink
    from connectors.ingest import event_batches, record_batches, table_env, update_batches
    from operators.keyed import DEAD_LETTERS, KEYED, side_output
    from operators.parse_fn import ParseFunction
    from operators.ps_fn import fan_out_updates

    t_env = table_env(env)
    if cfg.topics.batched:
        batches_in = record_batches(t_env, cfg.kafka, cfg.topics.input, cfg.job_name,
                                    cfg.bounds.stop_offsets)  # fmt: skip
    else:
        batches_in = event_batches(
            t_env,
            cfg.kafka,
            cfg.topics.input,
            cfg.job_name,
            cfg.bounds.stop_offsets,
            cfg.ingest_window_ms,
            cfg.flink.parallelism,
        )
    updates = update_batches(t_env, cfg.kafka, cfg.topics.updates, f"{cfg.job_name}-{cfg.run_id}",
                             UPDATE_WINDOW_MS, cfg.bounds.updates_from)  # fmt: skip

    parsed = batches_in.process(ParseFunction(s), output_type=KEYED).name("parse").uid("parse")
    side_output(parsed, DEAD_LETTERS).sink_to(
        kafka_sink(cfg.kafka, cfg.topics.dead_letters, cfg.delivery, f"{cfg.run_id}-dlq")
    ).name("dead-letter-sink").uid("dead-letter-sink")
    fanned = (
        updates.flat_map(fan_out_updates(s.loop.workers, s.model.dim), output_type=KEYED)
        .name("fan-out-updates")
        .uid("fan-out-updates")
    )
    return parsed, fanned


def _parameter_server(parsed, fanned, s):
    """Workers keyed by ``task#worker`` (examples and model updates in), shards keyed by
    ``task/shard`` (pushes in, model updates out); each record comes with its key
    (``operators.keyed.keyed``)."""
    from pyflink.common import Types

    from operators.keyed import PUSHES, keyed, side_output
    from operators.shard_fn import ShardFunction
    from operators.worker_fn import WorkerFunction

    workers = (
        keyed(parsed)
        .connect(keyed(fanned))
        .process(WorkerFunction(s), output_type=Types.STRING())  # the prediction records
        .name("worker")
        .uid("worker")
    )
    shards = (
        keyed(side_output(workers, PUSHES))
        .process(ShardFunction(s), output_type=Types.PRIMITIVE_ARRAY(Types.BYTE()))
        .name("shard")
        .uid("shard")
    )
    return workers, shards


def _outputs(cfg: TrainConfig, parsed, workers, shards) -> None:
    """The model updates (the feedback edge), predictions, metrics and, when asked, digests."""
    from pyflink.common import Types

    from connectors.flink_kafka import kafka_sink
    from operators.evaluate_fn import EvaluatorFunction
    from operators.keyed import COUNTS, DIGESTS, PREDICTIONS, keyed, side_output

    # the feedback edge: at-least-once by design, updates are absolute and idempotent
    shards.sink_to(
        kafka_sink(cfg.kafka, cfg.topics.updates, "at-least-once", low_latency=True, raw=True)
    ).name("model-updates-sink").uid("model-updates-sink")

    batches = side_output(workers, PREDICTIONS)
    # the workers write the prediction records themselves: a mini-batch enters Python once
    # more (the evaluator), not twice
    workers.sink_to(
        kafka_sink(cfg.kafka, cfg.topics.predictions, cfg.delivery, f"{cfg.run_id}-pred")
    ).name("train-predictions-sink").uid("train-predictions-sink")

    counts = side_output(parsed, COUNTS).union(side_output(shards, COUNTS))
    keyed(batches.union(counts)).process(
        EvaluatorFunction(cfg.window, cfg.run_id, on_drift=cfg.model.on_drift),
        output_type=Types.STRING(),
    ).name("evaluator").uid("evaluator").sink_to(
        kafka_sink(cfg.kafka, cfg.topics.metrics, cfg.delivery, f"{cfg.run_id}-metrics")
    ).name("metrics-sink").uid("metrics-sink")

    if cfg.digest_topic:
        side_output(workers, DIGESTS).union(side_output(shards, DIGESTS)).sink_to(
            kafka_sink(cfg.kafka, cfg.digest_topic, "at-least-once")
        ).name("digest-sink").uid("digest-sink")


# ---- flags ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default="flink", choices=ENGINES)
    _model_args(parser.add_argument_group("model"))
    _ps_args(parser.add_argument_group("parameter server"))
    _io_args(parser.add_argument_group("topics and bounds"))
    parser.add_argument("--inject-failure", metavar="MARKER", help=argparse.SUPPRESS)
    add_kafka_args(parser)
    # the feedback loop waits on every Python bundle and every network buffer it crosses
    # process mode: thread mode is faster (README) but a job hung now and then, see env.py
    add_flink_args(parser, bundle_time_ms=10, buffer_timeout_ms=5)


def _model_args(model) -> None:
    add_field_flags(model, ModelSettings)
    hyper = dict(ModelSettings.__dataclass_fields__["hyper"].default)
    for name, text in (("alpha", "FTRL learning rate"), ("beta", "FTRL beta"), ("l1", None),
                       ("l2", None), ("lr", "AdaGrad/SGD learning rate")):  # fmt: skip
        model.add_argument(f"--{name}", type=float, default=hyper.get(name), help=text)


def _ps_args(ps) -> None:
    add_field_flags(ps, LoopSettings)
    ps.add_argument(
        "--ingest-window",
        type=int,
        default=50,
        metavar="MS",
        help="gather raw events for MS ms in Flink's window state and hand them to Python as "
        "one record (default 50; see docs/architecture.md); --input-format ndjson records "
        "reach Python one by one, ungathered",
    )
    add_clip_argument(ps, "so one huge value cannot make a shard reject a whole push; serve "
                      "must use the same X")  # fmt: skip
    add_task_arguments(ps, "train", DEFAULT_MAX_TASKS, "; each task costs about 176 MiB at "
                       "2^20 features, 57 with --no-standardize")  # fmt: skip
    ps.add_argument("--window", type=int, default=10_000, help="metrics window (predictions)")


def _io_args(io) -> None:
    add_field_flags(io, TrainTopics)
    io.add_argument("--delivery", default="exactly-once", choices=DELIVERIES)
    add_field_flags(io, Bounds)
    io.add_argument("--stop-at-offsets", metavar="P=OFFSET,...", help="stop at these end offsets")
    io.add_argument("--summary-json", metavar="PATH", help="write final metrics and settings")
    io.add_argument("--run-id", help="tags this run's model updates (default: random)")
    io.add_argument(
        "--init-model",
        metavar="DIR",
        help="warm start from a snapshot directory (or a folder of them, one per task)",
    )
    io.add_argument(
        "--digest-topic",
        metavar="TOPIC",
        help="write a SHA-256 of each shard's and worker's state to TOPIC after every change "
        "(and as found, after a restore): checks savepoints and rescaling; costs a hash per record",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The flags as a ``TrainConfig`` (each settings object checks its own)."""
    hyper = tuple((k, getattr(args, k)) for k in HYPER if getattr(args, k) is not None)
    hash_bits_from_args(args)  # and the --init-model snapshot against it
    tasks, max_tasks = task_limits(args.tasks, args.max_tasks)
    flink = flink_settings(args)
    given = {key for key, _ in flink.options}
    defaults = tuple((k, v) for k, v in LOCAL_OPTIONS if k not in given)
    # the user's --flink-option wins; only the user's are checked (a py4j scan, ~0.4 s)
    flink = replace(flink, options=defaults + flink.options, job_options=defaults)
    stops = parse_offsets(args.stop_at_offsets) if args.stop_at_offsets else None
    cfg = TrainConfig(
        kafka=kafka_config(args),
        flink=flink,
        model=ModelSettings(
            **fields_from_args(ModelSettings, args), hyper=hyper, clip=clip_from_args(args)
        ),  # fmt: skip
        loop=LoopSettings(
            **fields_from_args(LoopSettings, args), tasks=tasks, max_tasks=max_tasks
        ),  # fmt: skip
        topics=TrainTopics(**fields_from_args(TrainTopics, args)),
        bounds=Bounds(**fields_from_args(Bounds, args), stop_offsets=stops),
        engine=args.engine,
        ingest_window_ms=args.ingest_window,
        window=args.window,
        delivery=args.delivery,
        summary_json=args.summary_json,
        fail_marker=fail_marker_from_args(args, flink),
        init_model=str(Path(args.init_model).resolve()) if args.init_model else None,
        digest_topic=args.digest_topic,
    )
    return replace(cfg, run_id=args.run_id) if args.run_id else cfg


def four_digits(value) -> str:
    """A metric with four decimals, ``n/a`` when undefined (``None``)."""
    return metric_text("{:.4f}", value, "n/a")


def print_summary(summary: dict) -> None:
    if summary.get("unbounded"):
        print(f"training job of run {summary['run']} submitted (unbounded)")
        return
    print(
        f"{summary['engine']}: {summary['events']:,} events in {summary['seconds']:.1f}s "
        f"({(summary['events_per_s'] or 0):,.0f}/s); dead letters {summary['dead_letters']}, "
        f"rejected pushes {summary['rejected_pushes']}"
    )
    for task, doc in sorted(summary["tasks"].items()):
        print(
            f"  task {task}: n={doc['count']:,} AUC {four_digits(doc['auc'])} "
            f"(±{doc['auc_error_bound']:.1e}) "
            f"log loss {four_digits(doc['log_loss'])} accuracy {four_digits(doc['accuracy'])} "
            f"staleness max {doc['staleness_max']} model version {doc['model_version']}"
        )
    for doc in summary.get("drifts", []):
        print(f"  drift detected in task {doc['task']} at prediction {doc['count']:,} (model "
              f"version {doc['model_version']:,}): its log loss rose"
              f"{DRIFT_DONE.get(doc.get('action'), '')}")  # fmt: skip
