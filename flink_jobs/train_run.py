"""Running ``streamshard train`` on Flink: the input's bounds, the job's start, and a driver
that follows the metrics topic until every event of a bounded run is accounted for (or prints
progress for ever), then cancels the job and sums the run up."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from connectors.config import KafkaConfig
from connectors.errors import StreamshardError
from flink_jobs.env import cancel_quietly
from flink_jobs.train import TrainConfig, build, four_digits
from operators.evaluation import DEAD_LETTER_COUNT, REJECTED_COUNT, json_record


def resolve_bounds(cfg: TrainConfig) -> tuple[dict[int, int] | None, int | None]:
    """End offsets per partition of the input and the number of events they hold."""
    from connectors.admin import bounds

    ends, records = bounds(
        cfg.kafka, cfg.topics.input, cfg.bounds.stop_offsets, cfg.bounds.max_events
    )
    if ends is None or not cfg.topics.batched:
        return ends, records
    count = events_in_ndjson
    if cfg.topics.columnar:
        from operators.parsing import record_decoder

        count = partial(events_in_columns, decode=record_decoder(cfg.topics.input_format))
    return ends, count_batched_events(cfg.kafka, cfg.topics.input, ends, records, count)


def events_in_ndjson(value: bytes | None) -> int:
    from connectors.events import split_record

    return len(split_record(value, True))


def events_in_columns(value: bytes | None, decode=None) -> int:
    """What the parser accounts for in a columnar record (``decode``: its decoder, JSON
    columns by default): one per event (taken or dead-lettered), or one for a record that is
    not one.

    >>> events_in_columns(b'{"event_id": ["a", 1], "ts": [1, 2], "label": [0, 0], "features": {}}')
    2
    >>> events_in_columns(b'{"event_id": ["a"]}'), events_in_columns(None)
    (1, 1)
    """
    from connectors.columns import decode_columns

    cols, bad = (decode or decode_columns)(value)
    return len(cols) + len(bad)


def count_batched_events(kafka, topic: str, ends: dict[int, int], records: int, count) -> int:
    """How many events the records below ``ends`` carry (``count(value)`` of each): a
    bounded run ends when every one is accounted for."""
    from connectors.admin import consumer

    cons = consumer(kafka, topic, committed_only=False)
    seen = events = 0
    deadline = time.monotonic() + 120
    try:
        while seen < records and time.monotonic() < deadline:
            for tp, batch in cons.poll(timeout_ms=500).items():
                for record in batch:
                    if record.offset < ends.get(tp.partition, 0):
                        seen += 1
                        events += count(record.value)
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
                elif doc["type"] in ("window", "drift"):
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
    produce(cfg.kafka, cfg.topics.metrics, [(cfg.run_id.encode(), json.dumps(doc).encode())])


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
        if expected is not None and cfg.bounds.timeout_s and now - started > cfg.bounds.timeout_s:
            raise StreamshardError(
                f"timed out after {cfg.bounds.timeout_s:.0f}s with {watcher.accounted()} of "
                f"{expected} events accounted for"
            )


def progress_line(watcher: _MetricsWatcher, seconds: float) -> str:
    """One line of an unbounded run's progress: events so far, rate, AUC per task."""
    n = watcher.accounted()
    tasks = "; ".join(
        f"{task} AUC {four_digits(doc['auc'])} version {doc['model_version']}"
        for task, doc in sorted(watcher.cumulative.items())
    )
    return (f"[{seconds:,.0f}s] {n:,} events ({n / max(seconds, 1e-9):,.0f}/s overall), "
            f"dead letters {watcher.counters.get(DEAD_LETTER_COUNT, 0):,}"
            + (f"; {tasks}" if tasks else ""))  # fmt: skip


def run(cfg: TrainConfig) -> dict:
    """Run ``cfg``'s engine (the job on Flink, or ``--engine local``); its summary, also
    written to ``--summary-json``."""
    if cfg.engine == "local":
        from flink_jobs.train_local import run_local as run_engine
    else:
        run_engine = run_flink
    summary = run_engine(cfg)
    if cfg.summary_json:
        Path(cfg.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.summary_json).write_text(json_record(summary, indent=2))
    return summary


def run_flink(cfg: TrainConfig) -> dict:
    from connectors.admin import create_topics, end_offset_at_most
    from flink_jobs.env import make_env

    create_topics(cfg.kafka, [cfg.topics.predictions, cfg.topics.metrics, cfg.topics.dead_letters])
    if cfg.digest_topic:
        create_topics(cfg.kafka, [cfg.digest_topic], partitions=1)
    create_topics(cfg.kafka, [cfg.topics.updates], partitions=1)  # one total order of updates
    stop_offsets, expected = resolve_bounds(cfg)
    # a new run reads the updates topic from its end as of now, not the earlier runs' history
    # (a restart resumes from its checkpoint's offsets)
    updates_from = end_offset_at_most(cfg.kafka, cfg.topics.updates)
    cfg = replace(
        cfg, bounds=replace(cfg.bounds, stop_offsets=stop_offsets, updates_from=updates_from)
    )
    env = make_env(cfg.flink)
    build(env, cfg)
    announce_settings(cfg)
    if expected is None and os.environ.get("PYFLINK_GATEWAY_PORT"):
        env.execute(cfg.job_name)  # under `flink run`: the client follows (or -d returns)
        return {"engine": cfg.engine, "unbounded": True, "run": cfg.run_id}
    watcher = _MetricsWatcher(cfg.kafka, cfg.topics.metrics, cfg.run_id)
    started = time.monotonic()
    client = env.execute_async(cfg.job_name)
    try:
        _follow(client, watcher, cfg, expected, started)
        elapsed = time.monotonic() - started
    finally:
        cancel_quietly(client)
        watcher.close()
    return summarize_run(
        cfg, watcher.cumulative, watcher.counters, watcher.windows, expected, elapsed
    )


def summarize_run(cfg, cumulative, counters, windows, expected, elapsed) -> dict:
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
        "windows": [w for w in windows if w["type"] == "window"],
        "drifts": [w for w in windows if w["type"] == "drift"],
        "settings": cfg.settings_for_summary(),
    }
