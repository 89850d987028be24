"""``streamshard generate``: write a synthetic stream with a known true model to Kafka, or
(``--requests N --rate R``) prediction requests stamped with the wall clock as they are sent,
at a steady rate: a load test of ``serve``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from connectors.config import KafkaConfig
from connectors.errors import StreamshardError
from flink_jobs.options import add_kafka_args, kafka_config
from operators.parsing import record_encoder
from operators.synthetic import (
    MALFORMED_KINDS,
    CtrSettings,
    CtrStream,
    corrupt,
    encode,
    truth_report,
)

SCENARIOS = ("ctr",)


@dataclass(frozen=True)
class GenerateConfig:
    kafka: KafkaConfig
    settings: CtrSettings
    topic: str = "events"
    partitions: int = 1
    rate: float | None = None
    truth_path: str | None = None
    malformed: float = 0.0
    progress: bool = False
    stamp_now: bool = False  # ts = the time each event is sent, not the synthetic clock
    batch: int = 1  # events per Kafka record (> 1: NDJSON, for train --input-format ndjson)
    # with batch > 1, the records' format: ndjson, columns or arrow (train --input-format)
    record_format: str = "ndjson"
    requests: bool = False  # requests to serve (no label, ts = send time), not events


@dataclass(frozen=True)
class GenerateResult:
    events: int
    malformed: int
    end_offsets: dict[int, int]
    seconds: float

    def offsets_flag(self) -> str:
        return ",".join(f"{p}={o}" for p, o in sorted(self.end_offsets.items()))


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.start = total, enabled and total > 0, time.monotonic()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        rate = done / max(time.monotonic() - self.start, 1e-9)
        width = 30
        filled = int(width * done / self.total)
        sys.stderr.write(
            f"\rgenerate [{'#' * filled}{'.' * (width - filled)}] {done:,}/{self.total:,} "
            f"events {rate:,.0f}/s"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


REQUEST_LINGER_MS = 5  # a load generator's batching: ~25 records per produce request at 5,000/s


def send_requests(kafka: KafkaConfig, topic: str, docs, rate: float | None,
                  progress: _Progress | None = None) -> GenerateResult:  # fmt: skip
    """Send each of ``docs`` as a request (its ``label`` dropped, keyed by ``event_id``) with
    ``ts`` the wall clock when it is handed to the producer, at a steady ``rate`` per second
    (``None``: as fast as the producer goes); wait for every ack.

    The producer is confluent-kafka's (librdkafka): kafka-python's pure-Python record
    encoding tops out near 4,000 records/s on one core, below the load a serving test needs.
    It lingers ``REQUEST_LINGER_MS``, which the requests' latency includes: the embedded
    broker spends about a millisecond of CPU per produce request, so one request per record
    would measure the broker's load, not the job's."""
    from confluent_kafka import KafkaException, Producer

    from connectors.admin import check_reachable

    check_reachable(kafka)
    conf = {**kafka.librdkafka_config(), "acks": "1", "linger.ms": REQUEST_LINGER_MS}
    prod = Producer(conf)
    ends: dict[int, int] = {}
    failures: list[str] = []

    def acked(err, msg) -> None:
        if err is not None:
            failures.append(str(err))
        else:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    sent, start = 0, time.monotonic()
    try:
        for doc in docs:
            if rate:
                ahead = start + sent / rate - time.monotonic()
                if ahead > 0.001:  # sleep in steps of a millisecond or more
                    time.sleep(ahead)
            request = {k: v for k, v in doc.items() if k != "label"}
            request["ts"] = int(time.time() * 1000)
            value = json.dumps(request).encode()
            while True:
                try:
                    prod.produce(topic, value, request["event_id"].encode(), on_delivery=acked)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    prod.poll(0.01)
            sent += 1
            if sent % 1000 == 0:
                prod.poll(0)
                if progress is not None:
                    progress.update(sent)
        if prod.flush(60) or failures:
            raise StreamshardError(
                f"{len(failures) or 'some'} requests not acknowledged by {kafka.bootstrap_servers}"
                + (f": {failures[0]}" if failures else "")
            )
    except KafkaException as exc:
        raise StreamshardError(f"producing to {topic!r} failed: {exc}") from exc
    finally:
        if progress is not None:
            progress.close()
    return GenerateResult(sent, 0, ends, time.monotonic() - start)


class _Records:
    """Events into Kafka records: one per event, or ``batch`` events per record joined by
    newlines (``--batch``); each chunk's sends are confirmed before the next, and the end
    offset of every partition is kept."""

    def __init__(self, cfg: GenerateConfig):
        from connectors.admin import producer

        self.topic, self.batch = cfg.topic, cfg.batch
        # records of many events: NDJSON lines, or a columnar format's encoder
        self.encode = None if cfg.record_format == "ndjson" else record_encoder(cfg.record_format)
        self.prod = producer(cfg.kafka, acks="all", linger_ms=20, batch_size=512 * 1024)
        self.held: list[tuple[bytes, bytes]] = []  # events of the record being filled
        self.futures: list = []
        self.ends: dict[int, int] = {}

    def send(self, key: bytes, value: bytes) -> None:
        if self.batch == 1:
            self.futures.append(self.prod.send(self.topic, key=key, value=value))
            return
        self.held.append((key, value))
        if len(self.held) == self.batch:
            self._send_held()

    def _send_held(self) -> None:
        """One record of the held events, keyed by the first one's key."""
        if self.encode:
            value = self.encode([orjson.loads(v) for _, v in self.held])
        else:
            value = b"\n".join(v for _, v in self.held)
        self.futures.append(self.prod.send(self.topic, key=self.held[0][0], value=value))
        self.held = []

    def confirm(self) -> None:
        """Wait for every record sent so far to be acknowledged."""
        self.prod.flush()
        for future in self.futures:
            meta = future.get(timeout=30)
            self.ends[meta.partition] = max(self.ends.get(meta.partition, 0), meta.offset + 1)
        self.futures = []

    def finish(self) -> None:
        """Send the last, shorter record (``--batch``) and confirm it."""
        if self.held:
            self._send_held()
        self.confirm()

    def close(self) -> None:
        self.prod.close()


def generate(cfg: GenerateConfig) -> GenerateResult:
    """Produce the stream, chunk by chunk, waiting for every ack; throttle to ``rate``."""
    from connectors.admin import create_topics

    create_topics(cfg.kafka, [cfg.topic], cfg.partitions)
    if cfg.requests:
        docs = (doc for doc, _ in CtrStream(cfg.settings).events())
        progress = _Progress(cfg.settings.events, cfg.progress)
        return send_requests(cfg.kafka, cfg.topic, docs, cfg.rate, progress)
    bad_rng = np.random.default_rng(cfg.settings.seed + 7)
    records = _Records(cfg)
    progress = _Progress(cfg.settings.events, cfg.progress)
    probs, labels, malformed, sent = [], [], 0, 0
    start = time.monotonic()
    try:
        for docs, p, y in CtrStream(cfg.settings).chunks():
            bad = bad_rng.random(len(docs)) < cfg.malformed
            for i, doc in enumerate(docs):
                if cfg.stamp_now:
                    doc["ts"] = int(time.time() * 1000)
                if bad[i]:
                    value = corrupt(doc, MALFORMED_KINDS[malformed % len(MALFORMED_KINDS)])
                    malformed += 1
                else:
                    value = encode(doc)
                records.send(doc["event_id"].encode(), value)
                sent += 1
                if cfg.rate and sent % 100 == 0:
                    ahead = sent / cfg.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
            records.confirm()
            probs.append(p[~bad])
            labels.append(y[~bad])
            progress.update(sent)
        records.finish()
    finally:
        progress.close()
        records.close()
    if cfg.truth_path:
        _write_truth(cfg, probs, labels, malformed, records.ends)
    return GenerateResult(sent, malformed, records.ends, time.monotonic() - start)


def _write_truth(cfg: GenerateConfig, probs: list, labels: list, malformed: int,
                 ends: dict) -> None:  # fmt: skip
    """The true model's figures on the events written (``--truth``)."""
    report = truth_report(
        cfg.settings,
        np.concatenate(probs) if probs else np.zeros(0),
        np.concatenate(labels) if labels else np.zeros(0, np.int64),
    )
    report.update(topic=cfg.topic, malformed=malformed, end_offsets=ends)
    Path(cfg.truth_path).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.truth_path).write_text(json.dumps(report, indent=2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="ctr", choices=SCENARIOS)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--events", type=int, metavar="N", help="N labelled training events")
    what.add_argument(
        "--requests", type=int, metavar="N",
        help="N prediction requests for serve: no label, ts = the time each is sent (with "
        "--rate R, a steady load test); topic 'requests' unless --topic",
    )  # fmt: skip
    parser.add_argument("--topic", help="default 'events' ('requests' with --requests)")
    parser.add_argument("--partitions", type=int, default=1, help="when creating the topic")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rate", type=float, metavar="R", help="events per second (default: max)")
    parser.add_argument("--drift-at", type=int, metavar="K", help="concept drift from event K")
    parser.add_argument("--base-rate", type=float, default=0.10, help="target click rate")
    parser.add_argument("--truth", metavar="PATH", help="write the true model's AUC/log loss")
    parser.add_argument(
        "--malformed",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="replace this fraction of events with malformed records (for testing dead letters)",
    )
    parser.add_argument("--task", default="ctr", help="the task name stamped on every event")
    parser.add_argument(
        "--batch", type=int, default=1, metavar="N",
        help="N events per Kafka record, one per line (NDJSON; for train --input-format ndjson)",
    )  # fmt: skip
    form = parser.add_mutually_exclusive_group()
    form.add_argument(
        "--columns", action="store_true",
        help="with --batch N: each record holds its N events as JSON columns (for train "
        "--input-format columns; connectors/columns.py)",
    )  # fmt: skip
    form.add_argument(
        "--arrow", action="store_true",
        help="with --batch N: each record holds its N events as an Arrow record batch (for "
        "train --input-format arrow; connectors/arrow_records.py)",
    )  # fmt: skip
    parser.add_argument(
        "--now", action="store_true",
        help="stamp each event's ts with the time it is sent (for serving latency); by default "
        "a synthetic clock, so a seed always gives the same stream",
    )  # fmt: skip
    add_kafka_args(parser)


def config_from_args(args: argparse.Namespace) -> GenerateConfig:
    from connectors.errors import ConfigError

    requests = args.requests is not None
    count = args.requests if requests else args.events
    if count < 0:
        raise ConfigError(f"--{'requests' if requests else 'events'} must be >= 0, got {count}")
    if requests and (args.malformed or args.batch != 1 or args.truth):
        raise ConfigError("--requests takes none of --malformed, --batch, --truth")
    form = "columns" if args.columns else "arrow" if args.arrow else "ndjson"
    if form != "ndjson" and (args.batch < 2 or args.malformed):
        raise ConfigError(f"--{form} needs --batch N (N >= 2) and takes no --malformed")
    if args.batch < 1:
        raise ConfigError(f"--batch must be >= 1 events per record, got {args.batch}")
    if args.rate is not None and args.rate <= 0:
        raise ConfigError(f"--rate must be > 0 events/s, got {args.rate}")
    if not 0.0 <= args.malformed <= 1.0:
        raise ConfigError(f"--malformed must be a fraction in [0, 1], got {args.malformed}")
    settings = CtrSettings(
        events=count, seed=args.seed, base_rate=args.base_rate, drift_at=args.drift_at,
        task=args.task,
    )  # fmt: skip
    return GenerateConfig(
        kafka=kafka_config(args),
        settings=settings,
        topic=args.topic or ("requests" if requests else "events"),
        partitions=args.partitions,
        rate=args.rate,
        truth_path=args.truth,
        malformed=args.malformed,
        progress=sys.stderr.isatty(),
        stamp_now=args.now,
        batch=args.batch,
        record_format=form,
        requests=requests,
    )
