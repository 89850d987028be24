"""PyFlink adapters of the parameter server: they move records in and out of Flink state and
call the pure classes of ``operators/ps.py``, ``logistic.py`` and ``evaluation.py``.

Records between operators are tuples (pickled across the Python/Java bridge):

- example ``("ex", task, worker_key, event_id, label, ts, indices, values)``
- push    ``("push", task, shard, worker_key, clock, indices, grads)``
- batch   ``("pred", task, worker_key, event_ids, labels, scores, version, staleness)``
- count   ``("count", name, n)`` (dead letters, rejected pushes) for the evaluator
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass

import numpy as np
from pyflink.common import Types
from pyflink.datastream import (
    KeyedBroadcastProcessFunction,
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
)
from pyflink.datastream.state import (
    ListStateDescriptor,
    MapStateDescriptor,
    ValueStateDescriptor,
)

from connectors.deadletter import dead_letter
from connectors.errors import DecodeError
from connectors.events import decode_event
from connectors.hashing import hash_features
from connectors.messages import ModelUpdate, decode_update
from operators.evaluation import Prequential
from operators.logistic import dimension, gradient, predict_proba
from operators.optim import make_optimizer
from operators.ps import Consistency, Replica, ShardServer, split_by_shard

PICKLED = Types.PICKLED_BYTE_ARRAY()
DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
COUNTS = OutputTag("counts", PICKLED)
PREDICTIONS = OutputTag("predictions", PICKLED)
REPLICA = MapStateDescriptor("replica", Types.STRING(), PICKLED)
DEAD_LETTER_COUNT = "__dead_letters__"
REJECTED_COUNT = "__rejected_pushes__"


@dataclass(frozen=True)
class PsSettings:
    """What every parameter-server operator needs to know; picklable."""

    run_id: str
    bits: int = 20
    shards: int = 4
    workers: int = 2
    batch_size: int = 100
    batch_timeout_ms: int = 200
    consistency: str = "async"
    optimizer: str = "ftrl"
    hyper: tuple = (("alpha", 0.05), ("beta", 1.0), ("l1", 0.0), ("l2", 0.0))
    update_threshold: float = 0.0
    input_topic: str = "events"
    fail_marker: str | None = None
    checkpoint_dir: str | None = None

    @property
    def dim(self) -> int:
        return dimension(self.bits)


def worker_of(event_id: str, workers: int) -> int:
    return zlib.crc32(event_id.encode()) % workers


class ParseFunction(ProcessFunction):
    """Decode, validate and hash each raw event; bad ones to ``DEAD_LETTERS``."""

    def __init__(self, s: PsSettings):
        self.s = s

    def process_element(self, value, ctx):
        try:
            event = decode_event(value)
        except DecodeError as exc:
            yield DEAD_LETTERS, dead_letter(value, exc.reason, topic=self.s.input_topic)
            yield COUNTS, ("count", DEAD_LETTER_COUNT, 1)
            return
        idx, vals = hash_features(event.features, self.s.bits)
        key = f"{event.task}#{worker_of(event.event_id, self.s.workers)}"
        yield ("ex", event.task, key, event.event_id, event.label, event.ts, idx, vals)


class _ReplicaView:
    """Read (and in the broadcast path, write) one task's replica blocks in broadcast state."""

    def __init__(self, state, task: str):
        self.state, self.task = state, task

    def get(self, bid: int):
        return self.state.get(f"{self.task}/w/{bid}")

    def __setitem__(self, bid: int, block) -> None:
        self.state.put(f"{self.task}/w/{bid}", block)


class WorkerFunction(KeyedBroadcastProcessFunction):
    """A training worker: buffer examples in state, score a mini-batch with the replica,
    push its gradient to every shard, honour the consistency model.

    Keyed by ``task#worker``; the broadcast side is the ``model-updates`` stream.
    """

    def __init__(self, s: PsSettings):
        self.s = s

    def open(self, runtime_context):
        self.consistency = Consistency.parse(self.s.consistency)
        self.pending = runtime_context.get_list_state(ListStateDescriptor("pending", PICKLED))
        self.clock = runtime_context.get_state(ValueStateDescriptor("clock", Types.LONG()))
        self.timer_at = runtime_context.get_state(ValueStateDescriptor("timer-at", Types.LONG()))
        self.buffered = runtime_context.get_state(ValueStateDescriptor("buffered", Types.LONG()))
        self.blocked = runtime_context.get_state(ValueStateDescriptor("blocked", Types.BOOLEAN()))

    # -- the model stream ------------------------------------------------------------------
    def process_broadcast_element(self, value, ctx):
        try:
            update = decode_update(value)
        except DecodeError:
            return
        if update.run != self.s.run_id:
            return  # an update of another run on a shared topic
        state = ctx.get_broadcast_state(REPLICA)
        Replica(_ReplicaView(state, update.task)).assign(update.indices, update.values)
        state.put(f"{update.task}/clock/{update.shard}", (update.version, update.clock))

    # -- the examples ----------------------------------------------------------------------
    def process_element(self, value, ctx):
        self.pending.add(value)
        count = (self.buffered.value() or 0) + 1
        self.buffered.update(count)
        if count >= self.s.batch_size and not self.blocked.value():
            yield from self._drain(ctx, flush=False)
        elif count == 1 and self.s.batch_timeout_ms > 0:
            now = ctx.timer_service().current_processing_time()
            self._wake_at(ctx, now + self.s.batch_timeout_ms)

    def on_timer(self, timestamp, ctx):
        self.timer_at.clear()
        self.blocked.clear()
        yield from self._drain(ctx, flush=True)

    def _shard_progress(self, ctx, task: str, key: str) -> tuple[list[int], int]:
        state = ctx.get_broadcast_state(REPLICA)
        applied, version = [], 0
        for shard in range(self.s.shards):
            entry = state.get(f"{task}/clock/{shard}")
            shard_version, clock = entry if entry is not None else (0, {})
            applied.append(clock.get(key, -1))
            version += shard_version
        return applied, version

    def _drain(self, ctx, flush: bool):
        buffered = list(self.pending.get() or [])
        if not buffered:
            return
        key = ctx.get_current_key()
        task = buffered[0][1]
        clock = self.clock.value() or 0
        now = ctx.timer_service().current_processing_time()
        timeout = self.s.batch_timeout_ms
        start = 0
        while len(buffered) - start > 0:
            applied, version = self._shard_progress(ctx, task, key)
            if not self.consistency.may_start(clock, applied):
                self.blocked.update(True)  # examples wait in state; a timer retries
                self._wake_at(ctx, now + 5)
                break
            full = len(buffered) - start >= self.s.batch_size
            if not full and not (flush and timeout > 0):
                if timeout > 0:  # a partial batch: train it once its time is up
                    self._wake_at(ctx, now + timeout)
                break
            batch = buffered[start : start + self.s.batch_size]
            start += len(batch)
            staleness = clock - (min(applied) + 1)
            yield from self._train(ctx, task, key, clock, batch, version, staleness)
            clock += 1
        self.clock.update(clock)
        if start:
            self.pending.update(buffered[start:])
            self.buffered.update(len(buffered) - start)

    def _wake_at(self, ctx, at: int) -> None:
        current = self.timer_at.value()
        if current is None or current > at:
            ctx.timer_service().register_processing_time_timer(at)
            self.timer_at.update(at)

    def _train(self, ctx, task, key, clock, batch, version, staleness):
        lengths = [len(ex[6]) for ex in batch]
        indptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        indices = np.concatenate([ex[6] for ex in batch]).astype(np.int64)
        values = np.concatenate([ex[7] for ex in batch]).astype(np.float64)
        labels = np.array([ex[4] for ex in batch], np.float64)
        replica = Replica(_ReplicaView(ctx.get_broadcast_state(REPLICA), task))
        scores = predict_proba(indptr, indices, values, replica.lookup, self.s.bits)
        idx, g = gradient(indptr, indices, values, labels, scores, self.s.bits)
        for shard, part_idx, part_g in split_by_shard(idx, g, self.s.dim, self.s.shards):
            yield ("push", task, shard, key, clock, part_idx, part_g)
        event_ids = [ex[3] for ex in batch]
        yield PREDICTIONS, ("pred", task, key, event_ids, labels.astype(np.int64), scores, version, staleness)


class _BlockView:
    """A shard's optimizer blocks in keyed MapState, as the mapping ``ShardServer`` expects.

    Only blocks known to exist are read: a MapState read of an absent key, under
    checkpointing, failed inside PyFlink 2.0's state channel ("A serializer has already been
    registered for the state" / "Unknown process bundle instruction id"), so the set of
    block ids lives in the shard's metadata and a new block never costs a read.
    """

    def __init__(self, state, known: set):
        self.state, self.known = state, known

    def get(self, bid: int):
        return self.state.get(bid) if bid in self.known else None

    def __setitem__(self, bid: int, arrays) -> None:
        self.known.add(bid)
        self.state.put(bid, arrays)


def _new_meta() -> dict:
    return {
        "version": 0,
        "clock": {},  # worker -> last clock applied (pushes arrive in clock order per worker)
        "rejected": 0,
        "next_clock": 0,  # sync mode: the clock applied next
        "pushes_applied": 0,
        "duplicates_skipped": 0,
        "blocks": set(),
    }


class ShardFunction(KeyedProcessFunction):
    """A parameter-server shard, keyed by ``task/shard``: applies pushes with the update
    rule, keeps its version and vector clock, emits the new absolute weights.

    ``sync`` mode holds pushes in state until every worker's push for a clock is in, then
    applies their sum once, clock by clock.
    """

    def __init__(self, s: PsSettings):
        self.s = s

    def open(self, runtime_context):
        self.server = ShardServer(
            make_optimizer(self.s.optimizer, **dict(self.s.hyper)), self.s.update_threshold
        )
        self.blocks = runtime_context.get_map_state(
            MapStateDescriptor("blocks", Types.LONG(), PICKLED)
        )
        self.meta = runtime_context.get_state(ValueStateDescriptor("meta", PICKLED))
        self.held = runtime_context.get_state(ValueStateDescriptor("held", PICKLED))
        self.seen = 0

    def process_element(self, push, ctx):
        _, task, shard, worker, clock, idx, g = push
        self._maybe_fail()
        meta = self.meta.value() or _new_meta()
        if clock <= meta["clock"].get(worker, -1):
            meta["duplicates_skipped"] += 1  # already applied once: never twice
            self.meta.update(meta)
            return
        if self.s.consistency == "sync":
            yield from self._hold(meta, task, shard, worker, clock, idx, g)
        else:
            yield from self._apply(meta, task, shard, [(worker, clock)], idx, g)
        self.meta.update(meta)

    def _hold(self, meta, task, shard, worker, clock, idx, g):
        held = self.held.value() or {}
        held.setdefault(clock, {})[worker] = (idx, g)
        while len(held.get(meta["next_clock"], ())) >= self.s.workers:
            ready = held.pop(meta["next_clock"])
            workers = sorted(ready)
            all_idx = np.concatenate([ready[w][0] for w in workers])
            all_g = np.concatenate([ready[w][1] for w in workers])
            uniq, inverse = np.unique(all_idx, return_inverse=True)
            summed = np.bincount(inverse, weights=all_g, minlength=uniq.size)
            pushes = [(w, meta["next_clock"]) for w in workers]
            yield from self._apply(meta, task, shard, pushes, uniq, summed)
            meta["next_clock"] += 1
        self.held.update(held)

    def _apply(self, meta, task, shard, pushes, idx, g):
        result = self.server.apply(_BlockView(self.blocks, meta["blocks"]), idx, g)
        if result is None:
            meta["rejected"] += 1
            result = (np.zeros(0, np.int64), np.zeros(0))
            yield COUNTS, ("count", REJECTED_COUNT, 1)
        meta["version"] += 1
        for worker, clock in pushes:
            meta["clock"][worker] = clock
            meta["pushes_applied"] += 1
        yield ModelUpdate(
            run=self.s.run_id,
            task=task,
            shard=shard,
            version=meta["version"],
            clock=dict(meta["clock"]),
            indices=result[0],
            values=result[1],
            applied=[[w, c] for w, c in pushes],
            rejected=meta["rejected"],
            ts=int(time.time() * 1000),
            pushes_applied=meta["pushes_applied"],
            duplicates_skipped=meta["duplicates_skipped"],
        ).to_json()

    def _maybe_fail(self):
        """Test-only failure injection: throw once, after the first completed checkpoint."""
        if not self.s.fail_marker:
            return
        self.seen += 1
        if self.seen < 50 or os.path.exists(self.s.fail_marker):
            return
        if _completed_checkpoint(self.s.checkpoint_dir):
            with open(self.s.fail_marker, "w") as marker:
                marker.write(str(time.time()))
            raise RuntimeError("injected failure (--inject-failure), once")


def _completed_checkpoint(uri: str | None) -> bool:
    if not uri:
        return False
    root = uri.removeprefix("file://")
    for dirpath, _, files in os.walk(root):
        if "_metadata" in files and os.path.basename(dirpath).startswith("chk-"):
            return True
    return False


class EvaluatorFunction(KeyedProcessFunction):
    """Prequential metrics per task (and counters), emitted as JSON to ``metrics``."""

    def __init__(self, window: int, emit_every_ms: int = 1000):
        self.window = window
        self.emit_every_ms = emit_every_ms

    def open(self, runtime_context):
        self.state = runtime_context.get_state(ValueStateDescriptor("evaluator", PICKLED))
        self.dirty = runtime_context.get_state(ValueStateDescriptor("dirty", Types.BOOLEAN()))

    def process_element(self, record, ctx):
        import json

        if record[0] == "count":
            total = (self.state.value() or 0) + record[2]
            self.state.update(total)
        else:
            _, task, _, _, labels, scores, version, staleness = record
            ev = self.state.value() or Prequential(task, self.window)
            for window in ev.add(labels, scores, version, staleness):
                yield json.dumps(window)
            self.state.update(ev)
        if not self.dirty.value():
            self.dirty.update(True)
            now = ctx.timer_service().current_processing_time()
            ctx.timer_service().register_processing_time_timer(now + self.emit_every_ms)

    def on_timer(self, timestamp, ctx):
        import json

        self.dirty.clear()
        value = self.state.value()
        if isinstance(value, Prequential):
            doc = value.cumulative()
        else:
            doc = {"type": "counter", "name": ctx.get_current_key(), "count": int(value or 0)}
        doc["time"] = int(time.time() * 1000)
        yield json.dumps(doc)


def prediction_lines(record):
    """One JSON line per test-then-train prediction of a mini-batch record."""
    import json

    _, task, worker, event_ids, labels, scores, version, staleness = record
    for event_id, label, score in zip(event_ids, labels.tolist(), scores.tolist(), strict=True):
        yield json.dumps(
            {
                "event_id": event_id,
                "task": task,
                "label": label,
                "score": score,
                "model_version": version,
                "staleness": staleness,
                "worker": worker,
            },
            separators=(",", ":"),
        )
