"""PyFlink adapters of the serve job: parse requests, keep a replica of the followed model
in keyed state, answer each request with the model version that scored it.

Records between operators are tuples (pickled across the Python/Java bridge):

- requests: one :class:`~operators.serving.RequestBatch` per serving key and gathering window
- updates ``(key, [model update])``, decoded and fanned out to every serving key of its task
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from pyflink.datastream import KeyedCoProcessFunction, ProcessFunction

from connectors.deadletter import dead_letter
from operators.faults import FailOnce
from operators.heap import freeze_startup_heap
from operators.journal import Working
from operators.keyed import DEAD_LETTERS, LONG, list_state, map_state, value_state, with_key
from operators.logistic import predict_proba
from operators.parsing import by_worker, parse_batch
from operators.ps import BLOCK, timer_lapsed
from operators.ps_fn import MapView, arm_timer, assign_update, replica_journal
from operators.replica import Replica
from operators.serving import (
    Following,
    RequestBatch,
    expire_waiting,
    prediction_records,
)
from operators.settings import ServingSettings

log = logging.getLogger(__name__)

# keyed state, per task#replica. The replica: blocks as of the last compaction, the updates
# since (the journal), the meta dict {"blocks": block ids, "follow": Following, "stamp" and
# "journal": see operators.journal.Journaled}
REPLICA, JOURNAL, META = "serve-replica", "serve-journal", "serve-meta"
# requests that came before any model: (held at ms, RequestBatch) entries, how many requests
# they hold, and when the timer that expires the oldest of them fires
WAITING, WAITING_N, EXPIRE_AT = "waiting", "waiting-n", "expire-at"


@dataclass(frozen=True)
class ServeSettings:
    """What the serve operators get: the job's serving settings (``operators.settings``, the
    object itself), where requests come from and the job's identity; picklable."""

    run_id: str
    serving: ServingSettings = field(default_factory=ServingSettings)
    requests_topic: str = "requests"
    init_model: str | None = None
    fail_marker: str | None = None  # tests only: --inject-failure (operators.faults)
    checkpoint_dir: str | None = None


class ParseRequests(ProcessFunction):
    """Decode, validate and hash a batch of raw requests ``Row(task, lines, partitions,
    offsets)`` (gathered by ``connectors.ingest``; ``label`` optional); emit one
    :class:`RequestBatch` per serving key; bad lines, and requests of tasks the gate
    refuses (``operators.ps.TaskGate``: each task costs a replica's dense copy and state), to
    ``DEAD_LETTERS``."""

    def __init__(self, s: ServeSettings):
        self.s = s

    def open(self, runtime_context):
        self.gate = self.s.serving.task_gate()
        freeze_startup_heap()

    def process_element(self, value, ctx):
        where = [(partition, offset, None) for partition, offset in zip(value[2], value[3],
                                                                       strict=True)]  # fmt: skip
        parsed = parse_batch(value[1], where, self.gate, require_label=False)
        for rejected in parsed.rejected:
            yield DEAD_LETTERS, rejected.letter(self.s.requests_topic, run=self.s.run_id)
        serving = self.s.serving
        parsed_at = int(time.time() * 1000) if serving.trace else 0
        # one hasher call per batch, the same hasher as training
        for key, examples, positions in by_worker(parsed.events, serving.replicas, serving.bits,
                                                  serving.clip):  # fmt: skip
            yield with_key(RequestBatch(examples.task, key, examples.event_ids,
                                        [parsed.events[p].ts for p in positions],
                                        examples.indptr, examples.indices, examples.values,
                                        [parsed.raws[p] for p in positions],
                                        parsed_at))  # fmt: skip


class ServeFunction(KeyedCoProcessFunction):
    """One serving replica of a task, keyed by ``task#replica``. Input 1: requests; input 2:
    model updates. Requests that come before any model wait in state, at most
    ``max_pending`` of them and for at most ``max_wait_ms``; beyond either they go to the dead
    letters with the reason."""

    def __init__(self, s: ServeSettings):
        self.s = s
        # tests only (--inject-failure): throw once a batch answered after a checkpoint
        # (its answers must reach the broker, in the transaction the failure aborts, for the
        # test to see that none is doubled: the producer lingers 5 ms)
        self.fault = FailOnce(s.fail_marker, s.checkpoint_dir, after=1, settle_s=0.5)

    def open(self, runtime_context):
        from operators.snapshot import load_models

        self.init = load_models(self.s.init_model) if self.s.init_model else {}
        self.replica = map_state(runtime_context, REPLICA)
        self.meta = value_state(runtime_context, META)
        # the replica's dense working copy, see operators/journal.py
        journal = list_state(runtime_context, JOURNAL)
        self.journaled = replica_journal(journal, self.replica, self.s.serving.dim, BLOCK)
        self.waiting = list_state(runtime_context, WAITING)
        self.waiting_n = value_state(runtime_context, WAITING_N, LONG)
        self.expire_at = value_state(runtime_context, EXPIRE_AT, LONG)
        freeze_startup_heap()

    def _meta(self, task: str) -> dict:
        meta = self.meta.value()
        if meta is None:
            meta = {"blocks": set(), "follow": Following.start(self.s.serving.follow_run)}
            self._reset(meta, task)
            self.meta.update(meta)
        return meta

    def _reset(self, meta: dict, task: str) -> None:
        """Back to the initial model: the snapshot of this task, or zeros (in state; the
        changed stamp makes the working copy rebuild from it)."""
        if meta["blocks"]:
            self.replica.clear()
            meta["blocks"] = set()
        self.journaled.restart(meta)
        snap = self.init.get(task)
        if snap is not None:
            meta["follow"] = Following.start(self.s.serving.follow_run, snap)
            Replica(MapView(self.replica, meta["blocks"])).load_dense(snap.unfolded())

    def _working(self, key: str, meta: dict) -> Working:
        return self.journaled.working(key, meta)

    def process_element1(self, batch: RequestBatch, ctx):
        meta = self._meta(batch.task)
        if meta["follow"].has_model:
            yield from self._answer(batch, meta, batch.key)
            self.fault.tick()  # tests only: fails after the answers left, before a checkpoint
            return
        waiting = self.waiting_n.value() or 0
        room = max(0, self.s.serving.max_pending - waiting)
        held, refused = batch.split(min(room, len(batch)))
        if len(held):
            now = ctx.timer_service().current_processing_time()
            self.waiting.add((now, held))
            self.waiting_n.update(waiting + len(held))
            if timer_lapsed(self.expire_at.value(), now, self.s.serving.max_wait_ms):
                arm_timer(ctx, self.expire_at, now + self.s.serving.max_wait_ms)
        for raw in refused.raws:
            pending = self.s.serving.max_pending
            reason = (f"no model yet for task {batch.task!r} and {pending} requests already "
                      f"wait (--max-pending {pending})")  # fmt: skip
            yield DEAD_LETTERS, dead_letter(raw, reason, topic=self.s.requests_topic,
                                            step="serve", run=self.s.run_id)  # fmt: skip

    def process_element2(self, value, ctx):
        key, updates = value  # decoded once by fan_out_updates
        for update in updates:
            yield from self._update(key, update)

    def _update(self, key: str, update):
        if update.bits is not None and update.bits != self.s.serving.bits:
            return  # another run's model, of another size: never followed
        meta = self._meta(update.task)
        follow: Following = meta["follow"]
        now = int(time.time() * 1000)
        decision = follow.decide(update.run, update.shard, update.version, update.ts, now)
        if decision == "skip":
            return
        if decision == "switch":
            self._reset(meta, update.task)
            follow = meta["follow"]
            follow.switched(update.run)
        work = self._working(key, meta)
        assign_update(self.journaled, work, meta, update)
        gaps = len(follow.gaps)
        follow.applied(update.run, update.shard, update.version, update.ts, update.offset)
        if len(follow.gaps) > gaps:
            log.warning("task %s: the updates topic no longer holds run %s's updates of "
                        "shard %d before version %d; the served model lacks the coordinates "
                        "only they wrote", update.task, update.run, update.shard,
                        update.version)  # fmt: skip
        self.meta.update(meta)
        if self.waiting_n.value():
            waiting = RequestBatch.concat([batch for _, batch in self._held()])
            self.waiting.clear()
            self.waiting_n.clear()
            yield from self._answer(waiting, meta, key)

    def _held(self) -> list:
        """The waiting requests, ``(held at ms, batch)`` in arrival order."""
        return list(self.waiting.get() or [])

    def on_timer(self, timestamp, ctx):
        """Requests that waited ``max_wait_ms`` for a model go to the dead letters."""
        self.expire_at.clear()
        if not self.waiting_n.value():
            return  # answered meanwhile
        now = ctx.timer_service().current_processing_time()
        expired, kept = expire_waiting(self._held(), now, self.s.serving.max_wait_ms)
        if kept:
            self.waiting.update(kept)
            self.waiting_n.update(sum(len(batch) for _, batch in kept))
            arm_timer(ctx, self.expire_at, kept[0][0] + self.s.serving.max_wait_ms)
        else:
            self.waiting.clear()
            self.waiting_n.clear()
        seconds = self.s.serving.max_wait_ms / 1000
        for batch in expired:
            reason = (f"no model for task {batch.task!r} within {seconds:g} s "
                      f"(--max-wait {seconds:g})")  # fmt: skip
            for raw in batch.raws:
                yield DEAD_LETTERS, dead_letter(raw, reason, topic=self.s.requests_topic,
                                                step="serve", run=self.s.run_id)  # fmt: skip

    def _answer(self, batch: RequestBatch, meta: dict, key: str):
        scored_at = time.time()
        replica = self._working(key, meta).copy
        follow: Following = meta["follow"]
        scores = predict_proba(batch.indptr, batch.indices, batch.values, replica.lookup,
                               self.s.serving.bits, follow.margin_offset)  # fmt: skip
        now = int(time.time() * 1000)
        trace = None
        if self.s.serving.trace and batch.parsed_at:
            trace = {"parsed": batch.parsed_at, "scoring": int(scored_at * 1000)}
        yield from prediction_records(batch, np.asarray(scores), follow, self.s.run_id, now,
                                      self.s.serving.max_request_age_ms, trace)  # fmt: skip
