"""``streamshard train --engine local``: the reference learner over the same events, in this
process, without Flink: the same decoder, hasher, learner and evaluator, mini-batches cut by
count. The yardstick of the job's learning (and of its exactly-once tests)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from flink_jobs.train import TrainConfig
from flink_jobs.train_run import resolve_bounds, summarize_run
from operators.evaluation import DEAD_LETTER_COUNT, REJECTED_COUNT


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

    stop_offsets, expected = resolve_bounds(cfg)
    engine = _Engine(cfg)
    started = time.monotonic()
    cons = consumer(cfg.kafka, cfg.topics.input, committed_only=True)
    # where each partition's reading stands; done at the end offsets (a record may carry
    # many events, so the records, not the events, say when)
    ends = {p: end for p, end in (stop_offsets or {}).items() if end > 0}
    position: dict[int, int] = {}
    try:
        while stop_offsets is None or any(position.get(p, 0) < e for p, e in ends.items()):
            polled = cons.poll(timeout_ms=500)
            if not polled and stop_offsets is None:
                break
            for tp, records in sorted(polled.items(), key=lambda kv: kv[0].partition):
                for record in records:
                    if stop_offsets and record.offset >= stop_offsets.get(tp.partition, 0):
                        continue
                    engine.record(record.value)
            for tp in cons.assignment():  # past transaction markers too
                position[tp.partition] = cons.position(tp)
    finally:
        cons.close()
    engine.flush()
    elapsed = time.monotonic() - started
    return engine.result(expected, elapsed)


class _Engine:
    """One model, evaluator and pending mini-batch per task, fed one Kafka record at a time."""

    def __init__(self, cfg: TrainConfig):
        from operators.snapshot import load_models

        self.cfg = cfg
        self.init = load_models(cfg.init_model) if cfg.init_model else {}
        self.models: dict = {}  # task -> OnlineLogistic
        self.evals: dict = {}  # task -> Prequential
        self.pending: dict[str, list] = {}
        self.windows: list[dict] = []
        self.predictions: list = []
        self.dead = 0
        self.gate = cfg.loop.task_gate()  # the tasks the job would admit, in order

    def record(self, value: bytes | None) -> None:
        """Every event of one record (one, or many with ``--input-format ndjson|columns``)."""
        for event in self._events(value):
            batch = self.pending.setdefault(event.task, [])
            batch.append(event)
            model = self.models.get(event.task)
            batches = model.age_ if model is not None else 0
            if len(batch) >= self.cfg.loop.batch_size_at(batches):
                self.train(event.task, batch)
                self.pending[event.task] = []

    def _events(self, value: bytes | None) -> list:
        """The record's events that decode and whose task the gate admits (the others
        counted as dead letters)."""
        from connectors.events import Event, split_record
        from operators.parsing import parse_batch, parse_columns, record_decoder

        if self.cfg.topics.columnar:
            decode = record_decoder(self.cfg.topics.input_format)
            cols, rejected = parse_columns(value, (None, None), self.gate, decode=decode)
            self.dead += len(rejected)
            return [Event(**cols.event(i)) for i in range(len(cols))]
        raws = [raw for _, raw in split_record(value, self.cfg.topics.ndjson)]
        parsed = parse_batch(raws, [None] * len(raws), self.gate)
        self.dead += len(parsed.rejected)
        return parsed.events

    def train(self, task: str, batch: list) -> None:
        from connectors.hashing import clip_values, hash_batch
        from operators.evaluation import Prequential
        from operators.local import OnlineLogistic

        cfg = self.cfg
        if task not in self.models:
            warm = self.init[task].weights if task in self.init else None
            self.models[task] = OnlineLogistic(
                cfg.model.bits, cfg.model.optimizer, cfg.loop.update_threshold, init_weights=warm,
                standardize=cfg.model.standardize, kkt=cfg.model.kkt_filter,
                on_drift=cfg.model.on_drift,
                **dict(cfg.model.hyper),
            )  # fmt: skip
        model = self.models[task]
        indptr, indices, values = hash_batch([e.features for e in batch], cfg.model.bits)
        clip_values(values, cfg.model.clip)
        labels = [e.label for e in batch]
        version, pushed = model.version_, model.pushed_
        scores = model.learn_many(indptr, indices, values, labels)
        ev = self.evals.setdefault(task, Prequential(task, cfg.window, cfg.model.on_drift))
        self.windows.extend(ev.add(labels, scores, version, 0, worker_drifts=model.drifts_,
                                   pushed=model.pushed_ - pushed))  # fmt: skip
        self.predictions.extend(zip((e.event_id for e in batch), scores.tolist(), strict=True))

    def flush(self) -> None:
        """Train what is left of each task's last mini-batch."""
        for task, batch in self.pending.items():
            if batch:
                self.train(task, batch)
        self.pending = {}

    def result(self, expected: int | None, elapsed: float) -> LocalRun:
        cumulative = {task: ev.cumulative() for task, ev in self.evals.items()}
        counters = {
            DEAD_LETTER_COUNT: self.dead,
            REJECTED_COUNT: sum(m.rejected_ for m in self.models.values()),
        }
        summary = summarize_run(self.cfg, cumulative, counters, self.windows, expected, elapsed)
        return LocalRun(summary, self.predictions, self.models)
