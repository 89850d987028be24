"""Running ``streamshard serve``: unbounded, or bounded: start the job, read its predictions
and dead letters until every request is accounted for (each counted once), cancel it and sum
the run up: latency percentiles overall and over time, model versions and freshness, gaps."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from connectors.config import KafkaConfig
from connectors.errors import StreamshardError
from flink_jobs.env import cancel_quietly
from flink_jobs.serve import ServeConfig, build


def run(cfg: ServeConfig, on_running=None) -> dict | None:
    """Run the serve job: until cancelled, or for a bounded run until every request is
    answered or dead-lettered (then its summary)."""
    from connectors.admin import bounds, create_topics

    create_topics(cfg.kafka, [cfg.topics.requests, cfg.topics.predictions, cfg.topics.dead_letters])
    create_topics(cfg.kafka, [cfg.topics.updates], partitions=1)
    stop_offsets, expected = bounds(
        cfg.kafka, cfg.topics.requests, cfg.bounds.stop_offsets, cfg.bounds.max_events
    )
    if expected is None:  # unbounded: serve until cancelled (Ctrl-C)
        from flink_jobs.env import make_env

        env = make_env(cfg.flink)
        build(env, cfg)
        env.execute(cfg.job_name)
        return None
    limits = replace(cfg.bounds, stop_offsets=stop_offsets)
    summary = run_bounded(replace(cfg, bounds=limits), expected, on_running)
    if cfg.summary_json:
        public = {k: v for k, v in summary.items() if not k.startswith("_")}
        Path(cfg.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.summary_json).write_text(json.dumps(public, indent=2))
    return summary


def _read_run(kafka: KafkaConfig, topic: str, field_name: str, run_id: str):
    """A reader of ``topic`` and a filter for this run's records in it."""
    import orjson

    from connectors.admin import FastReader

    reader = FastReader(kafka, topic)

    def mine(values: list[bytes]) -> list[dict]:
        out = []
        for value in values:
            try:
                doc = orjson.loads(value)
            except (orjson.JSONDecodeError, TypeError):
                continue
            if isinstance(doc, dict) and doc.get(field_name) == run_id:
                out.append(doc)
        return out

    return reader, mine


def run_bounded(cfg: ServeConfig, expected: int, on_running=None) -> dict:
    """Run until every one of ``expected`` requests is answered or dead-lettered; cancel.
    ``on_running()`` is called once the job reports RUNNING (a caller may start sending)."""
    from flink_jobs.env import make_env

    env = make_env(cfg.flink)
    build(env, cfg)
    preds, preds_mine = _read_run(cfg.kafka, cfg.topics.predictions, "serve_run", cfg.run_id)
    dead, dead_mine = _read_run(cfg.kafka, cfg.topics.dead_letters, "run", cfg.run_id)
    predictions: list[dict] = []
    dead_letters: list[dict] = []
    # requests answered, counted once: after a restore the embedded broker also hands
    # read_committed readers the aborted attempt's answers (docs/operations.md)
    answered: set = set()
    started = time.monotonic()
    client = env.execute_async(cfg.job_name)
    try:
        last_check, running = 0.0, False
        while len(answered) + len(dead_letters) < expected:
            # poll waits up to 0.2 s for records: that paces the loop, which shares the cores
            # of the job it watches
            while got := preds.poll(0.2):  # drain what is there
                mine = preds_mine(got)
                predictions += mine
                answered.update(p["event_id"] for p in mine)
            dead_letters += dead_mine(dead.poll(0))
            now = time.monotonic()
            if now - last_check > (2 if running else 0.3):
                last_check = now
                status = client.get_job_status().result().name
                if status in ("FAILED", "CANCELED", "FINISHED"):
                    raise StreamshardError(f"serve job ended early with status {status}")
                if status == "RUNNING" and not running:
                    running = True
                    if on_running is not None:
                        on_running()
            if cfg.bounds.timeout_s and now - started > cfg.bounds.timeout_s:
                raise StreamshardError(
                    f"timed out after {cfg.bounds.timeout_s:.0f}s with {len(predictions)} "
                    f"predictions and {len(dead_letters)} dead letters of {expected} requests"
                )
        elapsed = time.monotonic() - started
    finally:
        cancel_quietly(client)
        preds.close()
        dead.close()
    return summarize(cfg, predictions, dead_letters, expected, elapsed)


def summarize(cfg: ServeConfig, predictions, dead_letters, expected, elapsed) -> dict:
    import numpy as np

    def percentiles(name: str) -> dict:
        x = np.array([p[name] for p in predictions if p.get(name) is not None], float)
        return {f"p{q}": float(np.percentile(x, q)) for q in (50, 95, 99)} if x.size else {}

    versions = sorted({(p["task"], p["model_run"], p["model_version"]) for p in predictions})
    return {
        "run": cfg.run_id,
        "requests": expected,
        "predictions": len(predictions),
        "distinct_event_ids": len({p["event_id"] for p in predictions}),
        "dead_letters": len(dead_letters),
        "seconds": round(elapsed, 3),
        "latency_ms": percentiles("latency_ms"),
        # requests whose ts was too old or in the future: answered, no latency reported
        "ts_out_of_range": sum(p.get("latency_ms") is None for p in predictions),
        "model_age_ms": percentiles("model_age_ms"),
        "latency_over_time": latency_over_time(predictions),
        "model_versions": len(versions),
        # task -> shard -> the oldest version the topic still held, for a model that lacks
        # the run's first updates (operators.serving.Following.gaps)
        "model_gaps": {p["task"]: p["model_gaps"] for p in predictions if p.get("model_gaps")},
        "tasks": sorted({p["task"] for p in predictions}),
        "settings": cfg.settings_for_summary(),
        "_predictions": predictions,
        "_dead_letters": dead_letters,
    }


def latency_over_time(predictions: list[dict], window_ms: int = 10_000) -> list[dict]:
    """Latency p50/p99 and count per ``window_ms`` of ``served_at`` (from the first).

    >>> preds = [{"served_at": t, "latency_ms": t % 7} for t in range(0, 20_000, 100)]
    >>> [(w["from_s"], w["predictions"]) for w in latency_over_time(preds)]
    [(0.0, 100), (10.0, 100)]
    """
    import numpy as np

    if not predictions:
        return []
    served = np.array([p["served_at"] for p in predictions], np.int64)
    latency = np.array([np.nan if p.get("latency_ms") is None else p["latency_ms"]
                        for p in predictions], float)  # fmt: skip
    bucket = (served - served.min()) // window_ms
    out = []
    for b in np.unique(bucket):
        x = latency[(bucket == b) & ~np.isnan(latency)]
        row = {"from_s": float(b * window_ms / 1000), "predictions": int((bucket == b).sum())}
        if x.size:
            row.update(p50=float(np.percentile(x, 50)), p99=float(np.percentile(x, 99)))
        out.append(row)
    return out
