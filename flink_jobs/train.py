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
from operators.evaluation import json_record, metric_text
from operators.optim import make_optimizer
from operators.ps import DEFAULT_BATCH_SIZE, DEFAULT_MAX_TASKS, Consistency

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


# the flags whose name is not the field's
_FLAGS = {"block": "block-size", "batch_timeout_ms": "batch-timeout",
          "ingest_window_ms": "ingest-window"}  # fmt: skip
_CHOICES = {
    "engine": ("flink", "local"),
    "input_format": ("event", "ndjson"),
    "prediction_format": ("event", "batch"),
    "delivery": ("exactly-once", "at-least-once", "none"),
}


@dataclass(frozen=True)
class TrainConfig:
    kafka: KafkaConfig
    flink: FlinkSettings = field(default_factory=FlinkSettings)
    engine: str = "flink"
    run_id: str = field(default_factory=lambda: f"r-{uuid.uuid4().hex[:12]}")
    bits: int = 20
    shards: int = 4
    workers: int = 2
    batch_size: int = DEFAULT_BATCH_SIZE
    batch_timeout_ms: int = 200
    ingest_window_ms: int = 50
    consistency: str = "async"
    optimizer: str = "ftrl"
    hyper: dict = field(default_factory=lambda: {"alpha": 0.2, "beta": 1.0, "l1": 0.0, "l2": 0.0})
    standardize: bool = True
    warmup: bool = True
    update_threshold: float = 0.0
    read_my_writes: bool = True
    max_in_flight: int = 16
    tasks: tuple | None = None
    max_tasks: int = DEFAULT_MAX_TASKS
    clip: float | None = DEFAULT_CLIP
    input_format: str = "event"  # or ndjson: a record carries many events, one per line
    prediction_format: str = "event"  # or batch: one record per mini-batch, one line per event
    window: int = 10_000
    input_topic: str = "events"
    updates_topic: str = "model-updates"
    predictions_topic: str = "train-predictions"
    metrics_topic: str = "metrics"
    dead_letter_topic: str = "dead-letters"
    delivery: str = "exactly-once"
    stop_offsets: dict | None = None
    updates_from: int | None = None  # the updates topic offset a new run starts reading at
    max_events: int | None = None
    summary_json: str | None = None
    timeout_s: float | None = None
    fail_marker: str | None = None
    init_model: str | None = None
    digest_topic: str | None = None
    block: int = 4096
    job_name: str = "streamshard-train"

    def __post_init__(self) -> None:
        """Refuse, with one line naming the flag, settings no job can run with: checked
        however the config is made, from flags or in code."""
        from connectors.hashing import check_bits

        for name in ("shards", "workers", "batch_size", "window", "block", "max_in_flight",
                     "max_tasks"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"--{_FLAGS.get(name, name.replace('_', '-'))} must be >= 1, "
                                  f"got {getattr(self, name)}")  # fmt: skip
        if self.max_events is not None and self.max_events < 1:
            raise ConfigError(f"--max-events must be >= 1, got {self.max_events}")
        if self.ingest_window_ms < 1:
            raise ConfigError(f"--ingest-window must be >= 1 ms, got {self.ingest_window_ms}")
        if self.batch_timeout_ms < 0 or self.update_threshold < 0:
            raise ConfigError("--batch-timeout and --update-threshold must be >= 0")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name.replace('_', '-')} must be one of "
                                  f"{', '.join(allowed)}, got {getattr(self, name)!r}")  # fmt: skip
        Consistency.parse(self.consistency)
        make_optimizer(self.optimizer, **self.hyper)
        check_bits(self.bits)
        if self.input_format == "ndjson" and self.max_events is not None:
            raise ConfigError("--input-format ndjson counts events inside records: bound the "
                              "run with --stop-at-offsets instead of --max-events")  # fmt: skip

    def ps_settings(self):
        from operators.ps_fn import PsSettings

        return PsSettings(
            run_id=self.run_id,
            bits=self.bits,
            shards=self.shards,
            workers=self.workers,
            batch_size=self.batch_size,
            batch_timeout_ms=self.batch_timeout_ms,
            consistency=self.consistency,
            optimizer=self.optimizer,
            hyper=tuple(sorted(self.hyper.items())),
            standardize=self.standardize,
            warmup=self.warmup,
            update_threshold=self.update_threshold,
            read_my_writes=self.read_my_writes,
            max_in_flight=self.max_in_flight,
            tasks=self.tasks,
            max_tasks=self.max_tasks,
            clip=self.clip,
            ndjson=self.input_format == "ndjson",
            batch_predictions=self.prediction_format == "batch",
            input_topic=self.input_topic,
            fail_marker=self.fail_marker,
            checkpoint_dir=self.flink.checkpoint_dir,
            init_model=self.init_model,
            block=self.block,
            digests=bool(self.digest_topic),
        )

    def settings_for_summary(self) -> dict:
        skip = ("kafka", "flink", "fail_marker")
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        doc["stop_offsets"] = {str(p): o for p, o in (self.stop_offsets or {}).items()} or None
        doc["flink"] = asdict(self.flink)
        doc["kafka"] = {"bootstrap_servers": self.kafka.bootstrap_servers}
        return doc


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
    from connectors.ingest import event_batches, table_env, update_batches
    from operators.parse_fn import ParseFunction
    from operators.ps_fn import DEAD_LETTERS, PICKLED, fan_out_updates

    t_env = table_env(env)
    batches_in = event_batches(
        t_env,
        cfg.kafka,
        cfg.input_topic,
        cfg.job_name,
        cfg.stop_offsets,
        cfg.ingest_window_ms,
        cfg.flink.parallelism,
    )
    updates = update_batches(t_env, cfg.kafka, cfg.updates_topic, f"{cfg.job_name}-{cfg.run_id}",
                             UPDATE_WINDOW_MS, cfg.updates_from)  # fmt: skip

    parsed = batches_in.process(ParseFunction(s), output_type=PICKLED).name("parse").uid("parse")
    parsed.get_side_output(DEAD_LETTERS).sink_to(
        kafka_sink(cfg.kafka, cfg.dead_letter_topic, cfg.delivery, f"{cfg.run_id}-dlq")
    ).name("dead-letter-sink").uid("dead-letter-sink")
    fanned = (
        updates.flat_map(fan_out_updates(s.workers, s.dim), output_type=PICKLED)
        .name("fan-out-updates")
        .uid("fan-out-updates")
    )
    return parsed, fanned


def _parameter_server(parsed, fanned, s):
    """Workers keyed by ``task#worker`` (examples and model updates in), shards keyed by
    ``task/shard`` (pushes in, model updates out)."""
    from pyflink.common import Types

    from operators.ps_fn import PUSHES
    from operators.shard_fn import ShardFunction
    from operators.worker_fn import WorkerFunction

    workers = (
        parsed.connect(fanned)
        .key_by(lambda exs: exs.worker, lambda up: up[0], key_type=Types.STRING())
        .process(WorkerFunction(s), output_type=Types.STRING())  # the prediction records
        .name("worker")
        .uid("worker")
    )
    shards = (
        workers.get_side_output(PUSHES)
        .key_by(lambda push: push.key, key_type=Types.STRING())
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
    from operators.ps_fn import COUNTS, DIGESTS, PREDICTIONS

    # the feedback edge: at-least-once by design, updates are absolute and idempotent
    shards.sink_to(
        kafka_sink(cfg.kafka, cfg.updates_topic, "at-least-once", low_latency=True, raw=True)
    ).name("model-updates-sink").uid("model-updates-sink")

    batches = workers.get_side_output(PREDICTIONS)
    # the workers write the prediction records themselves: a mini-batch enters Python once
    # more (the evaluator), not twice
    workers.sink_to(
        kafka_sink(cfg.kafka, cfg.predictions_topic, cfg.delivery, f"{cfg.run_id}-pred")
    ).name("train-predictions-sink").uid("train-predictions-sink")

    counts = parsed.get_side_output(COUNTS).union(shards.get_side_output(COUNTS))
    batches.union(counts).key_by(lambda r: r.key, key_type=Types.STRING()).process(
        EvaluatorFunction(cfg.window, cfg.run_id), output_type=Types.STRING()
    ).name("evaluator").uid("evaluator").sink_to(
        kafka_sink(cfg.kafka, cfg.metrics_topic, cfg.delivery, f"{cfg.run_id}-metrics")
    ).name("metrics-sink").uid("metrics-sink")

    if cfg.digest_topic:
        workers.get_side_output(DIGESTS).union(shards.get_side_output(DIGESTS)).sink_to(
            kafka_sink(cfg.kafka, cfg.digest_topic, "at-least-once")
        ).name("digest-sink").uid("digest-sink")


def run(cfg: TrainConfig) -> dict:
    if cfg.engine == "local":
        from flink_jobs.train_local import run_local as run_engine
    else:
        from flink_jobs.train_run import run_flink as run_engine
    summary = run_engine(cfg)
    if cfg.summary_json:
        Path(cfg.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.summary_json).write_text(json_record(summary, indent=2))
    return summary


# ---- flags ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default="flink", choices=_CHOICES["engine"])
    _model_args(parser.add_argument_group("model"))
    _ps_args(parser.add_argument_group("parameter server"))
    _io_args(parser, parser.add_argument_group("topics and bounds"))
    parser.add_argument("--inject-failure", metavar="MARKER", help=argparse.SUPPRESS)
    add_kafka_args(parser)
    # the feedback loop waits on every Python bundle and every network buffer it crosses
    # process mode: thread mode is faster (README) but a job hung now and then, see env.py
    add_flink_args(parser, bundle_time_ms=10, buffer_timeout_ms=5)


def _model_args(model) -> None:
    model.add_argument("--hash-bits", type=int, default=20, help="2**BITS hashed features")
    model.add_argument("--optimizer", default="ftrl", choices=["ftrl", "adagrad", "sgd"])
    model.add_argument("--alpha", type=float, default=0.2, help="FTRL learning rate")
    model.add_argument("--beta", type=float, default=1.0, help="FTRL beta")
    model.add_argument("--l1", type=float, default=0.0)
    model.add_argument("--l2", type=float, default=0.0)
    model.add_argument("--lr", type=float, help="AdaGrad/SGD learning rate")
    model.add_argument(
        "--standardize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="learn over numeric features standardized online (running mean and variance "
        "kept on the shards with the weights; default)",
    )


def _ps_args(ps) -> None:
    ps.add_argument("--shards", type=int, default=4)
    ps.add_argument("--workers", type=int, default=2)
    ps.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ps.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a worker's mini-batches grow from 1 by an eighth each up to --batch-size (default)",
    )
    ps.add_argument(
        "--batch-timeout",
        type=int,
        default=200,
        metavar="MS",
        help="train a partial mini-batch once its oldest example waited MS (0: count only)",
    )
    ps.add_argument(
        "--ingest-window",
        type=int,
        default=50,
        metavar="MS",
        help="gather raw events for MS ms in Flink's window state and hand them to Python as "
        "one record per task (default 50; see docs/architecture.md)",
    )
    ps.add_argument("--consistency", default="async", help="async | bounded:TAU | sync")
    add_clip_argument(ps, "so one huge value cannot make a shard reject a whole push; serve "
                      "must use the same X")  # fmt: skip
    add_task_arguments(ps, "train", DEFAULT_MAX_TASKS, "; each task costs about 176 MiB at "
                       "2^20 features, 57 with --no-standardize")  # fmt: skip
    ps.add_argument(
        "--update-threshold",
        type=float,
        default=0.0,
        metavar="EPS",
        help="significantly-modified filter: send a weight only once it moved more than EPS",
    )
    ps.add_argument(
        "--read-my-writes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a worker scores with its own pushes applied at once, before the shards' updates "
        "come back (default; updates then carry the optimizer state; no effect in sync mode)",
    )
    ps.add_argument(
        "--max-in-flight",
        type=int,
        default=16,
        metavar="N",
        help="flow control: a worker waits while N of its mini-batches are not yet applied by "
        "every shard (default 16; in every mode, bounded:TAU waits sooner)",
    )
    ps.add_argument(
        "--block-size",
        type=int,
        default=4096,
        metavar="N",
        help="coordinates per keyed-state entry of shards and replicas (default 4096)",
    )
    ps.add_argument("--window", type=int, default=10_000, help="metrics window (predictions)")


def _io_args(parser: argparse.ArgumentParser, io) -> None:
    io.add_argument("--input-topic", default="events")
    io.add_argument(
        "--input-format", default="event", choices=_CHOICES["input_format"],
        help="event: one event per Kafka record; ndjson: a record carries many events, one "
        "per line (a bad one is dead-lettered with its record's partition, offset and index)",
    )  # fmt: skip
    io.add_argument(
        "--prediction-format", default="event", choices=_CHOICES["prediction_format"],
        help="event: one train-predictions record per event; batch: one record per "
        "mini-batch holding its predictions one per line (NDJSON)",
    )  # fmt: skip
    io.add_argument("--updates-topic", default="model-updates")
    io.add_argument("--predictions-topic", default="train-predictions")
    io.add_argument("--metrics-topic", default="metrics")
    io.add_argument("--dead-letter-topic", default="dead-letters")
    io.add_argument("--delivery", default="exactly-once", choices=_CHOICES["delivery"])
    io.add_argument("--max-events", type=int, metavar="N", help="stop after N events")
    io.add_argument("--stop-at-offsets", metavar="P=OFFSET,...", help="stop at these end offsets")
    io.add_argument("--summary-json", metavar="PATH", help="write final metrics and settings")
    io.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")
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
    """The flags as a ``TrainConfig`` (which checks them, ``TrainConfig.__post_init__``)."""
    hyper = {k: getattr(args, k) for k in HYPER if getattr(args, k) is not None}
    hash_bits_from_args(args)  # and the --init-model snapshot against it
    tasks, max_tasks = task_limits(args.tasks, args.max_tasks)
    flink = flink_settings(args)
    given = {key for key, _ in flink.options}
    defaults = tuple((k, v) for k, v in LOCAL_OPTIONS if k not in given)
    # the user's --flink-option wins; only the user's are checked (a py4j scan, ~0.4 s)
    flink = replace(flink, options=defaults + flink.options, job_options=defaults)
    cfg = TrainConfig(
        kafka=kafka_config(args),
        flink=flink,
        engine=args.engine,
        bits=args.hash_bits,
        shards=args.shards,
        workers=args.workers,
        batch_size=args.batch_size,
        batch_timeout_ms=args.batch_timeout,
        ingest_window_ms=args.ingest_window,
        consistency=args.consistency,
        optimizer=args.optimizer,
        hyper=hyper,
        update_threshold=args.update_threshold,
        read_my_writes=args.read_my_writes,
        standardize=args.standardize,
        warmup=args.warmup,
        max_in_flight=args.max_in_flight,
        tasks=tasks,
        max_tasks=max_tasks,
        clip=clip_from_args(args),
        input_format=args.input_format,
        prediction_format=args.prediction_format,
        window=args.window,
        input_topic=args.input_topic,
        updates_topic=args.updates_topic,
        predictions_topic=args.predictions_topic,
        metrics_topic=args.metrics_topic,
        dead_letter_topic=args.dead_letter_topic,
        delivery=args.delivery,
        stop_offsets=parse_offsets(args.stop_at_offsets) if args.stop_at_offsets else None,
        max_events=args.max_events,
        summary_json=args.summary_json,
        timeout_s=args.timeout,
        fail_marker=fail_marker_from_args(args, flink),
        init_model=str(Path(args.init_model).resolve()) if args.init_model else None,
        digest_topic=args.digest_topic,
        block=args.block_size,
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
              f"version {doc['model_version']:,}): its log loss rose")  # fmt: skip
