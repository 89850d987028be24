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
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from connectors.config import KafkaConfig
from connectors.errors import ConfigError, StreamshardError
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
from operators.evaluation import DEAD_LETTER_COUNT, REJECTED_COUNT, json_record, metric_text
from operators.optim import make_optimizer
from operators.ps import DEFAULT_BATCH_SIZE, DEFAULT_MAX_TASKS, Consistency, batch_size_at

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

    from operators.ps_fn import PICKLED
    from operators.shard_fn import ShardFunction
    from operators.worker_fn import WorkerFunction

    workers = (
        parsed.connect(fanned)
        .key_by(lambda exs: exs[2], lambda up: up[0], key_type=Types.STRING())
        .process(WorkerFunction(s), output_type=PICKLED)
        .name("worker")
        .uid("worker")
    )
    shards = (
        workers.key_by(lambda p: f"{p[1]}/{p[2]}", key_type=Types.STRING())
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
    from operators.ps_fn import COUNTS, DIGESTS, PREDICTION_LINES, PREDICTIONS

    # the feedback edge: at-least-once by design, updates are absolute and idempotent
    shards.sink_to(
        kafka_sink(cfg.kafka, cfg.updates_topic, "at-least-once", low_latency=True, raw=True)
    ).name("model-updates-sink").uid("model-updates-sink")

    batches = workers.get_side_output(PREDICTIONS)
    # the workers write the prediction records themselves: a mini-batch enters Python once
    # more (the evaluator), not twice
    workers.get_side_output(PREDICTION_LINES).sink_to(
        kafka_sink(cfg.kafka, cfg.predictions_topic, cfg.delivery, f"{cfg.run_id}-pred")
    ).name("train-predictions-sink").uid("train-predictions-sink")

    counts = parsed.get_side_output(COUNTS).union(shards.get_side_output(COUNTS))
    batches.union(counts).key_by(lambda r: r[1], key_type=Types.STRING()).process(
        EvaluatorFunction(cfg.window, cfg.run_id), output_type=Types.STRING()
    ).name("evaluator").uid("evaluator").sink_to(
        kafka_sink(cfg.kafka, cfg.metrics_topic, cfg.delivery, f"{cfg.run_id}-metrics")
    ).name("metrics-sink").uid("metrics-sink")

    if cfg.digest_topic:
        workers.get_side_output(DIGESTS).union(shards.get_side_output(DIGESTS)).sink_to(
            kafka_sink(cfg.kafka, cfg.digest_topic, "at-least-once")
        ).name("digest-sink").uid("digest-sink")


# ---- bounding a run ---------------------------------------------------------------------


def resolve_bounds(cfg: TrainConfig) -> tuple[dict[int, int] | None, int | None]:
    """End offsets per partition of the input and the number of events they hold."""
    from connectors.admin import bounds

    ends, records = bounds(cfg.kafka, cfg.input_topic, cfg.stop_offsets, cfg.max_events)
    if ends is None or cfg.input_format != "ndjson":
        return ends, records
    return ends, count_ndjson_events(cfg.kafka, cfg.input_topic, ends, records)


def count_ndjson_events(kafka, topic: str, ends: dict[int, int], records: int) -> int:
    """How many events the records below ``ends`` carry (``--input-format ndjson``): a
    bounded run ends when every one is accounted for."""
    from connectors.admin import consumer
    from connectors.events import split_record

    cons = consumer(kafka, topic, committed_only=False)
    seen = events = 0
    deadline = time.monotonic() + 120
    try:
        while seen < records and time.monotonic() < deadline:
            for tp, batch in cons.poll(timeout_ms=500).items():
                for record in batch:
                    if record.offset < ends.get(tp.partition, 0):
                        seen += 1
                        events += len(split_record(record.value, True))
    finally:
        cons.close()
    if seen < records:
        raise StreamshardError(f"read {seen} of the {records} records of {topic} to count "
                               "their events")  # fmt: skip
    return events


# ---- running ----------------------------------------------------------------------------


class _MetricsWatcher:
    """Follows the metrics topic: latest cumulative record per task and counter totals."""

    def __init__(self, kafka: KafkaConfig, topic: str, run_id: str):
        from connectors.admin import consumer

        self.consumer = consumer(kafka, topic, committed_only=True)
        self.run_id = run_id
        self.cumulative: dict[str, dict] = {}
        self.windows: list[dict] = []
        self.counters: dict[str, int] = {}

    def poll(self) -> None:
        polled = self.consumer.poll(timeout_ms=500)
        if not polled:
            # kafka-python returned at once with nothing (the embedded broker does not hold
            # empty fetches): pace the loop so the driver does not take a core from the job
            time.sleep(0.2)
        for records in polled.values():
            for record in records:
                doc = json.loads(record.value)
                if doc.get("run") != self.run_id:
                    continue  # another run's metrics on a shared topic
                if doc["type"] == "cumulative":
                    best = self.cumulative.get(doc["task"])
                    if best is None or doc["count"] >= best["count"]:
                        self.cumulative[doc["task"]] = doc
                elif doc["type"] == "counter":
                    self.counters[doc["name"]] = max(
                        self.counters.get(doc["name"], 0), doc["count"]
                    )
                elif doc["type"] == "window":
                    self.windows.append(doc)

    def accounted(self) -> int:
        tasks = sum(doc["count"] for doc in self.cumulative.values())
        return tasks + self.counters.get(DEAD_LETTER_COUNT, 0)

    def close(self) -> None:
        self.consumer.close()


PROGRESS_EVERY_S = 10.0


def announce_settings(cfg: TrainConfig) -> None:
    """One ``settings`` record of the run on the metrics topic, so a report can say how the
    run was made (not transactional: it is written once, before the job starts)."""
    from connectors.admin import produce

    doc = {"type": "settings", "run": cfg.run_id, "time": int(time.time() * 1000),
           "settings": cfg.settings_for_summary()}  # fmt: skip
    produce(cfg.kafka, cfg.metrics_topic, [(cfg.run_id.encode(), json.dumps(doc).encode())])


def _follow(client, watcher: _MetricsWatcher, cfg: TrainConfig, expected: int | None,
            started: float) -> None:  # fmt: skip
    """Follow the job's metrics until ``expected`` events are accounted for (for ever when
    None: an unbounded run, which prints a progress line every ``PROGRESS_EVERY_S``)."""
    last_check = last_print = started
    while expected is None or watcher.accounted() < expected:
        watcher.poll()
        now = time.monotonic()
        if now - last_check > 2:
            last_check = now
            status = client.get_job_status().result().name
            if status in ("FAILED", "CANCELED", "FINISHED"):
                raise StreamshardError(f"training job ended early with status {status}")
        if expected is None and now - last_print >= PROGRESS_EVERY_S:
            last_print = now
            print(progress_line(watcher, now - started), flush=True)
        if expected is not None and cfg.timeout_s and now - started > cfg.timeout_s:
            raise StreamshardError(
                f"timed out after {cfg.timeout_s:.0f}s with {watcher.accounted()} of "
                f"{expected} events accounted for"
            )


def _4(value) -> str:
    return metric_text("{:.4f}", value, "n/a")


def progress_line(watcher: _MetricsWatcher, seconds: float) -> str:
    """One line of an unbounded run's progress: events so far, rate, AUC per task."""
    n = watcher.accounted()
    tasks = "; ".join(
        f"{task} AUC {_4(doc['auc'])} version {doc['model_version']}"
        for task, doc in sorted(watcher.cumulative.items())
    )
    return (f"[{seconds:,.0f}s] {n:,} events ({n / max(seconds, 1e-9):,.0f}/s overall), "
            f"dead letters {watcher.counters.get(DEAD_LETTER_COUNT, 0):,}"
            + (f"; {tasks}" if tasks else ""))  # fmt: skip


def run_flink(cfg: TrainConfig) -> dict:
    from connectors.admin import create_topics, end_offset_at_most
    from flink_jobs.env import make_env

    create_topics(cfg.kafka, [cfg.predictions_topic, cfg.metrics_topic, cfg.dead_letter_topic])
    if cfg.digest_topic:
        create_topics(cfg.kafka, [cfg.digest_topic], partitions=1)
    create_topics(cfg.kafka, [cfg.updates_topic], partitions=1)  # one total order of updates
    stop_offsets, expected = resolve_bounds(cfg)
    # a new run reads the updates topic from its end as of now, not the earlier runs' history
    # (a restart resumes from its checkpoint's offsets)
    updates_from = end_offset_at_most(cfg.kafka, cfg.updates_topic)
    cfg = replace(cfg, stop_offsets=stop_offsets, updates_from=updates_from)
    env = make_env(cfg.flink)
    build(env, cfg)
    announce_settings(cfg)
    if expected is None and os.environ.get("PYFLINK_GATEWAY_PORT"):
        env.execute(cfg.job_name)  # under `flink run`: the client follows (or -d returns)
        return {"engine": cfg.engine, "unbounded": True, "run": cfg.run_id}
    watcher = _MetricsWatcher(cfg.kafka, cfg.metrics_topic, cfg.run_id)
    started = time.monotonic()
    client = env.execute_async(cfg.job_name)
    try:
        _follow(client, watcher, cfg, expected, started)
        elapsed = time.monotonic() - started
    finally:
        try:
            client.cancel().result()
        except Exception:  # already ended
            pass
        watcher.close()
    return _summary(cfg, watcher.cumulative, watcher.counters, watcher.windows, expected, elapsed)


@dataclass
class LocalRun:
    """What the local reference run leaves behind: its summary, every prediction
    ``(event_id, score)`` in order, and the model of each task."""

    summary: dict
    predictions: list
    models: dict


def run_local(cfg: TrainConfig) -> dict:
    return local_run(cfg).summary


def local_run(cfg: TrainConfig) -> LocalRun:
    """The reference learner over the same events, one process, mini-batches cut by count."""
    from connectors.admin import consumer
    from connectors.errors import DecodeError
    from connectors.events import decode_event, split_record
    from connectors.hashing import clip_values, hash_batch
    from operators.evaluation import Prequential
    from operators.local import OnlineLogistic
    from operators.snapshot import load_models

    stop_offsets, expected = resolve_bounds(cfg)
    init = load_models(cfg.init_model) if cfg.init_model else {}
    models: dict[str, OnlineLogistic] = {}
    evals: dict[str, Prequential] = {}
    pending: dict[str, list] = {}
    windows: list[dict] = []
    predictions: list = []
    dead = 0
    gate = cfg.ps_settings().task_gate()  # the tasks the job would admit, in order
    started = time.monotonic()

    def train(task: str, batch: list) -> None:
        if task not in models:
            warm = init[task].weights if task in init else None
            models[task] = OnlineLogistic(
                cfg.bits, cfg.optimizer, cfg.update_threshold, init_weights=warm,
                standardize=cfg.standardize, **cfg.hyper,
            )  # fmt: skip
        model = models[task]
        indptr, indices, values = hash_batch([e.features for e in batch], cfg.bits)
        clip_values(values, cfg.clip)
        labels = [e.label for e in batch]
        version = model.version_
        scores = model.learn_many(indptr, indices, values, labels)
        ev = evals.setdefault(task, Prequential(task, cfg.window))
        windows.extend(ev.add(labels, scores, version, 0))
        predictions.extend(zip((e.event_id for e in batch), scores.tolist(), strict=True))

    cons = consumer(cfg.kafka, cfg.input_topic, committed_only=True)
    try:
        seen = 0
        while expected is None or seen < expected:
            polled = cons.poll(timeout_ms=500)
            if not polled and expected is None:
                break
            for tp, records in sorted(polled.items(), key=lambda kv: kv[0].partition):
                for record in records:
                    if stop_offsets and record.offset >= stop_offsets.get(tp.partition, 0):
                        continue
                    seen += 1
                    for _, raw in split_record(record.value, cfg.input_format == "ndjson"):
                        try:
                            event = decode_event(raw)
                        except DecodeError:
                            dead += 1
                            continue
                        if gate.refuse(event.task):
                            dead += 1
                            continue
                        batch = pending.setdefault(event.task, [])
                        batch.append(event)
                        batches = models[event.task].batches_ if event.task in models else 0
                        if len(batch) >= batch_size_at(batches, cfg.batch_size, cfg.warmup):
                            train(event.task, batch)
                            pending[event.task] = []
    finally:
        cons.close()
    for task, batch in pending.items():
        if batch:
            train(task, batch)
    elapsed = time.monotonic() - started
    cumulative = {task: ev.cumulative() for task, ev in evals.items()}
    counters = {
        DEAD_LETTER_COUNT: dead,
        REJECTED_COUNT: sum(m.rejected_ for m in models.values()),
    }
    summary = _summary(cfg, cumulative, counters, windows, expected, elapsed)
    return LocalRun(summary, predictions, models)


def _summary(cfg, cumulative, counters, windows, expected, elapsed) -> dict:
    events = sum(doc["count"] for doc in cumulative.values()) + counters.get(DEAD_LETTER_COUNT, 0)
    return {
        "engine": cfg.engine,
        "events": events,
        "expected_events": expected,
        "seconds": round(elapsed, 3),
        "events_per_s": events / elapsed if elapsed > 0 else None,
        "dead_letters": counters.get(DEAD_LETTER_COUNT, 0),
        "rejected_pushes": counters.get(REJECTED_COUNT, 0),
        "tasks": cumulative,
        "windows": windows,
        "settings": cfg.settings_for_summary(),
    }


def run(cfg: TrainConfig) -> dict:
    summary = run_local(cfg) if cfg.engine == "local" else run_flink(cfg)
    if cfg.summary_json:
        Path(cfg.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.summary_json).write_text(json_record(summary, indent=2))
    return summary


# ---- flags ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default="flink", choices=["flink", "local"])
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
        "--input-format", default="event", choices=["event", "ndjson"],
        help="event: one event per Kafka record; ndjson: a record carries many events, one "
        "per line (a bad one is dead-lettered with its record's partition, offset and index)",
    )  # fmt: skip
    io.add_argument(
        "--prediction-format", default="event", choices=["event", "batch"],
        help="event: one train-predictions record per event; batch: one record per "
        "mini-batch holding its predictions one per line (NDJSON)",
    )  # fmt: skip
    io.add_argument("--updates-topic", default="model-updates")
    io.add_argument("--predictions-topic", default="train-predictions")
    io.add_argument("--metrics-topic", default="metrics")
    io.add_argument("--dead-letter-topic", default="dead-letters")
    io.add_argument(
        "--delivery", default="exactly-once", choices=["exactly-once", "at-least-once", "none"]
    )
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
    for name in ("shards", "workers", "batch_size", "window", "block_size", "max_in_flight"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_events is not None and args.max_events < 1:
        raise ConfigError(f"--max-events must be >= 1, got {args.max_events}")
    if args.ingest_window < 1:
        raise ConfigError(f"--ingest-window must be >= 1 ms, got {args.ingest_window}")
    if args.batch_timeout < 0 or args.update_threshold < 0:
        raise ConfigError("--batch-timeout and --update-threshold must be >= 0")
    Consistency.parse(args.consistency)
    hyper = {k: getattr(args, k) for k in HYPER if getattr(args, k) is not None}
    make_optimizer(args.optimizer, **hyper)
    hash_bits_from_args(args)
    tasks, max_tasks = task_limits(args.tasks, args.max_tasks)
    if args.input_format == "ndjson" and args.max_events is not None:
        raise ConfigError("--input-format ndjson counts events inside records: bound the run "
                          "with --stop-at-offsets instead of --max-events")  # fmt: skip
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
            f"  task {task}: n={doc['count']:,} AUC {_4(doc['auc'])} "
            f"(±{doc['auc_error_bound']:.1e}) "
            f"log loss {_4(doc['log_loss'])} accuracy {_4(doc['accuracy'])} "
            f"staleness max {doc['staleness_max']} model version {doc['model_version']}"
        )
