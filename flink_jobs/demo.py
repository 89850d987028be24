"""``streamshard demo``: everything end to end on this machine, nothing to configure.

Starts the embedded broker; generates a click stream with a known true model and 1%
malformed records; trains on it with 4 shards and 2 workers on a local Flink mini-cluster;
snapshots the model; serves a few thousand held-out requests from the snapshot and the live
update stream; writes a report; prints the final figures; stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np

from connectors.broker import EmbeddedBroker
from connectors.config import KafkaConfig
from connectors.errors import ConfigError
from operators.settings import Bounds, LoopSettings, ModelSettings, ServingSettings
from operators.synthetic import CtrSettings, CtrStream

BITS = 20
SEED = 42


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def _request_docs(train_events: int, count: int) -> list[dict]:
    """Held-out events of the same true model, to serve (their labels score the answers)."""
    stream = CtrStream(CtrSettings(events=train_events + count, seed=SEED))
    return [doc for i, (doc, _) in enumerate(stream.events()) if i >= train_events]


def _send_requests(kafka: KafkaConfig, docs: list[dict], rate: float) -> threading.Thread:
    """Send ``docs`` without labels to ``requests`` at ``rate``/s, ``ts`` = send time."""
    from flink_jobs.generate import send_requests

    thread = threading.Thread(target=send_requests, args=(kafka, "requests", docs, rate),
                              name="demo-requests", daemon=True)  # fmt: skip
    thread.start()
    return thread


def _table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


MIN_EVENTS = 1_000
MIN_REQUESTS = 100


def check_sizes(events: int, requests: int) -> None:
    """Refuse sizes the demo cannot report on, before it starts anything.

    >>> check_sizes(20_000, 3_000)
    >>> check_sizes(0, 3_000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    connectors.errors.ConfigError: --events must be >= 1000 ... got 0
    """
    if events < MIN_EVENTS:
        raise ConfigError(
            f"--events must be >= {MIN_EVENTS} (the demo trains, then reports AUC), got {events}"
        )
    if requests < MIN_REQUESTS:
        raise ConfigError(
            f"--requests must be >= {MIN_REQUESTS} (the demo reports serving AUC), got {requests}"
        )


def run_demo(args: argparse.Namespace) -> int:
    from connectors.admin import create_topics
    from flink_jobs import report
    from flink_jobs.env import FlinkSettings
    from operators.metrics import roc_auc
    from operators.snapshot import from_topic, save

    check_sizes(args.events, args.requests)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    flink = FlinkSettings(
        checkpoint_dir=(out / "checkpoints").as_uri(), bundle_time_ms=10, buffer_timeout_ms=5
    )
    with EmbeddedBroker(log_path=out / "broker.log") as broker:
        kafka = KafkaConfig(broker.bootstrap_servers)
        _say(f"embedded broker at {broker.bootstrap_servers}")
        gen, trained = _generate_and_train(kafka, flink, args.events, out)
        snaps = from_topic(kafka, "model-updates", BITS)
        snap_dir = save(snaps[0], out / "models")
        _say(f"snapshot: {snap_dir}")
        docs = _request_docs(args.events, args.requests)
        labels = {d["event_id"]: d["label"] for d in docs}
        create_topics(kafka, ["requests"])
        _say(f"serving {args.requests:,} held-out requests at 500/s from the snapshot ...")
        served = _serve(kafka, flink, snap_dir, docs, args.requests, out)
        preds = served["_predictions"]
        serve_auc = roc_auc(
            np.array([labels[p["event_id"]] for p in preds]), np.array([p["score"] for p in preds])
        )
        truth = json.loads((out / "truth.json").read_text())
        serving = {**{k: v for k, v in served.items() if not k.startswith("_")}, "auc": serve_auc}
        page = report.write_report(report.read_metrics(kafka, "metrics"), out / "report",
                                   truth=truth, serving=serving)  # fmt: skip
    _print_results(trained, served, truth, serve_auc, snap_dir, page)
    print()
    _say(f"done in {time.monotonic() - t0:.0f}s; broker stopped; files in {out}/")
    ok = served["predictions"] == args.requests and trained["events"] == args.events
    return 0 if ok else 1


def _generate_and_train(kafka, flink, events: int, out: Path) -> tuple:
    """The click stream (1% malformed) on ``events``, then ``train`` over all of it."""
    from flink_jobs import generate, train
    from flink_jobs.train_run import run

    gen = generate.generate(
        generate.GenerateConfig(
            kafka=kafka,
            settings=CtrSettings(events=events, seed=SEED),
            topic="events",
            partitions=2,
            truth_path=str(out / "truth.json"),
            malformed=0.01,
        )
    )
    _say(f"generated {gen.events:,} click events ({gen.malformed} malformed) on 'events'")
    _say("training: 4 shards, 2 workers, async, on a local Flink mini-cluster ...")
    trained = run(
        train.TrainConfig(
            kafka=kafka,
            flink=flink,
            model=ModelSettings(bits=BITS),
            loop=LoopSettings(shards=4, workers=2, consistency="async"),
            bounds=Bounds(stop_offsets=gen.end_offsets, timeout_s=1800),
            window=max(500, events // 20),  # about 20 points per plotted series
            summary_json=str(out / "train-summary.json"),
        )
    )
    _say(f"trained on {trained['events']:,} events in {trained['seconds']:.0f}s")
    return gen, trained


def _serve(kafka, flink, snap_dir: Path, docs: list, requests: int, out: Path) -> dict:
    """``serve`` from the snapshot while a thread sends ``docs`` at 500 requests/s."""
    from flink_jobs import serve
    from flink_jobs.serve_run import run

    sender: list[threading.Thread] = []
    return run(
        serve.ServeConfig(
            kafka=kafka,
            flink=flink,
            serving=ServingSettings(bits=BITS),
            init_model=str(snap_dir),
            bounds=Bounds(max_events=requests, timeout_s=600),
            summary_json=str(out / "serve-summary.json"),
        ),
        on_running=lambda: sender.append(_send_requests(kafka, docs, rate=500)),
    )


def _print_results(trained, served, truth, serve_auc, snap_dir, page) -> None:
    ctr = trained["tasks"]["ctr"]
    lat = served["latency_ms"]
    print()
    _table(
        [
            (
                "training events",
                f"{trained['events']:,} ({trained['dead_letters']} to dead-letters)",
            ),
            (
                "training throughput",
                f"{ctr['events_per_s']:,.0f} events/s (first to last "
                f"prediction; with the job's start-up, {trained['seconds']:.0f} s in all)",
            ),
            (
                "prequential AUC",
                f"{ctr['auc']:.4f} (true model on the same stream: {truth['auc']:.4f})",
            ),
            (
                "prequential log loss",
                f"{ctr['log_loss']:.4f} (true model: {truth['log_loss']:.4f})",
            ),
            (
                "staleness max / mean",
                f"{ctr['staleness_max']} / {ctr['staleness_mean']:.1f} mini-batches",
            ),
            ("model version", f"{ctr['model_version']:,}"),
            (
                "served predictions",
                f"{served['predictions']:,} of {served['requests']:,}, AUC {serve_auc:.4f}",
            ),
            ("serving latency", f"p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms"),
            ("snapshot", str(snap_dir)),
            ("report", str(page)),
        ]
    )
