"""The parameter server's worker as a PyFlink adapter: it buffers examples in keyed state,
asks the pure loop (``operators/loop.py``, ``ps.py``) how many mini-batches may start, scores
them with its replica, pushes gradients to the shards and applies the model updates that come
back (``ps_fn.py`` has the records it exchanges).
"""

from __future__ import annotations

import numpy as np
from pyflink.datastream import KeyedCoProcessFunction

from connectors.errors import ConfigError
from operators.dense_range import DenseRange
from operators.drift import LossDrift
from operators.examples import Examples
from operators.heap import freeze_startup_heap
from operators.journal import Journaled, Working
from operators.keyed import (
    BOOLEAN,
    LONG,
    PREDICTIONS,
    PUSHES,
    list_state,
    map_state,
    value_state,
    with_key,
)
from operators.logistic import (
    NOTHING_HELD,
    batch_gradient,
    batch_scores,
    empty_push,
    kkt_filter,
    prepare,
    standardized_push,
)
from operators.loop import (
    answer_to_wait,
    from_rolled_back_timeline,
    must_train,
    staleness,
    state_pieces,
)
from operators.metrics import log_losses
from operators.predictions import train_predictions
from operators.ps import Consistency, plan_batches, split_by_shard, state_digest, timer_lapsed
from operators.ps_fn import (
    STATE_PIECE,
    Digests,
    MapView,
    PsSettings,
    arm_timer,
    assign_update,
    initial_models,
    load_blocks,
    replica_journal,
    save_blocks,
)
from operators.records import Push, Scored
from operators.replica import Replica, StateReplica

# keyed state, per task#worker. The buffered examples: one map entry per chunk as it came
# from the parser, numbered, and the span (first, next) of the numbers in use. A map, not a
# list state: PyFlink's state cache re-sizes a cached list on every append, so a list grew
# quadratically dear while a worker waited (flow control) with its input still arriving
CHUNKS, SPAN, BUFFERED = "pending-chunks", "pending-span", "buffered"
# the next mini-batch's clock; the batch timeout's timer; a partial batch whose time is up
# (it stays due until trained, even if blocked meanwhile)
CLOCK, TIMER_AT, DUE = "clock", "timer-at", "due"
# the replica: blocks as of the last compaction, the journal since, and the meta dict
# {"blocks": block ids, "shards": {shard: (version, my applied clock)}, "applied": updates
# taken, "stamp" and "journal": see operators.journal.Journaled}
REPLICA, JOURNAL, META = "replica", "replica-journal", "replica-meta"
# read-my-writes: my pushes not yet reflected, as of the last compaction (the journal holds
# the ones since)
OWN = "own-pushes"
# --kkt-filter: the gradients it holds back, (sorted coordinates, sums)
HELD = "kkt-held"
# --on-drift reset|boost: the drift detector on this worker's predictions, and its count
DRIFT = "drift"


class WorkerFunction(KeyedCoProcessFunction):
    """A training worker, keyed by ``task#worker``: buffer examples in state, score a
    mini-batch with its replica, push the gradient to every shard, honour the consistency
    model. Input 1 is examples, input 2 the model updates read back from Kafka.
    """

    def __init__(self, s: PsSettings):
        self.s = s

    def open(self, runtime_context):
        self.consistency = Consistency.parse(self.s.loop.consistency, self.s.loop.max_in_flight)
        self.chunks = map_state(runtime_context, CHUNKS)
        self.span = value_state(runtime_context, SPAN)
        self.buffered = value_state(runtime_context, BUFFERED, LONG)
        self.clock = value_state(runtime_context, CLOCK, LONG)
        self.timer_at = value_state(runtime_context, TIMER_AT, LONG)
        self.due = value_state(runtime_context, DUE, BOOLEAN)
        self.replica = map_state(runtime_context, REPLICA)
        self.meta = value_state(runtime_context, META)
        journal = list_state(runtime_context, JOURNAL)
        # the replica's dense working copy, see operators/journal.py
        if self.s.loop.rmw:
            self.optimizer = self.s.model.make_optimizer()
            self.own = value_state(runtime_context, OWN)
            self.journaled = Journaled(journal, lambda key, meta: self._state_replica(meta),
                                       _replay_rmw, self._save_rmw)  # fmt: skip
        else:
            self.journaled = replica_journal(
                journal, self.replica, self.s.model.dim, self.s.loop.block
            )
        if self.s.model.kkt_filter:
            self.held = value_state(runtime_context, HELD)
        if self.s.model.on_drift != "alert":
            self.drift = value_state(runtime_context, DRIFT)
        self.incoming: Examples | None = None  # the chunk being received, not yet in state
        self.init = initial_models(self.s)
        self.digests = Digests(self.s, "worker")
        freeze_startup_heap()

    def _digest(self, key: str) -> tuple:
        """The digest of this key's replica, clock and buffered examples."""
        clock = self.clock.value() or 0
        fields = {
            "clock": clock,
            "buffered": self.buffered.value() or 0,
            "due": bool(self.due.value()),
            "pending": self._buffered_ids(),
        }
        meta = self.meta.value()
        if meta is None:
            return state_digest({}, fields), {"clock": clock}
        fields.update(shards=meta["shards"], applied=meta.get("applied", 0))
        replica = self._replica(key, meta).copy
        if self.s.loop.rmw:
            fields["own"] = replica.own
        arrays = replica.arrays
        if self.s.model.kkt_filter:
            held_idx, held_g = self.held.value() or NOTHING_HELD
            arrays = {**arrays, "held-idx": held_idx, "held-g": held_g}
        return state_digest(arrays, fields), {"clock": clock, "applied": fields["applied"]}

    def process_element1(self, value, ctx):
        return self.digests.around(ctx, self._digest, self._example(value, ctx))

    def process_element2(self, value, ctx):
        return self.digests.around(ctx, self._digest, self._model(value, ctx))

    def on_timer(self, timestamp, ctx):
        return self.digests.around(ctx, self._digest, self._timer(ctx))

    def _replica(self, key: str, meta: dict) -> Working:
        """The replica's dense working copy (rebuilt from state when stale)."""
        return self.journaled.working(key, meta)

    def _state_replica(self, meta: dict, own: dict | None = None) -> StateReplica:
        """A read-my-writes replica from its compacted state: blocks, my unreflected pushes
        and the shards' row counts."""
        names = self.optimizer.state_names
        dr = load_blocks(
            DenseRange(names, 0, self.s.model.dim, self.s.loop.block), self.replica, meta["blocks"]
        )
        own = (self.own.value() or {}) if own is None else own
        own = {k: list(v) for k, v in own.items()}
        return StateReplica(self.optimizer, dr, own, dict(meta.get("shard-rows", {})))

    def _save_rmw(self, work: Working, meta: dict) -> None:
        """Compact a read-my-writes replica: the blocks, with my unreflected pushes."""
        save_blocks(self.replica)(work, meta)
        self.own.update({k: list(v) for k, v in work.copy.own.items()})  # a copy: the
        # working copy's lists change after this, the state's must not
        meta["shard-rows"] = dict(work.copy.rows)

    def _meta(self, task: str) -> dict:
        meta = self.meta.value()
        if meta is None:
            meta = {"blocks": set(), "shards": {}}
            if task in self.init:  # warm start: the replica begins as the snapshot
                view = MapView(self.replica, meta["blocks"])
                if self.s.loop.rmw:
                    replica = self._state_replica(meta, {})
                    replica.warm(self.init[task].weights)
                    for bid, value in replica.take_touched().items():
                        view[bid] = value
                else:
                    Replica(view, self.s.loop.block).load_dense(self.init[task].weights)
                self.meta.update(meta)
        return meta

    # -- the model stream ------------------------------------------------------------------
    def _model(self, value, ctx):
        key, updates = value
        for update in updates:
            if update.run != self.s.run_id:
                continue  # an update of another run on a shared topic
            if update.waiting is not None:
                yield from self._awaited(ctx, key, update)
            elif self._take(key, update):
                yield from self._drain(ctx, self.meta.value(), flush=False)

    def _take(self, key: str, update) -> bool:
        """Apply one update to the replica; False if it must be ignored."""
        mine = update.clock.get(key, -1)
        if from_rolled_back_timeline(mine, self.clock.value() or 0):
            return False
        meta = self._meta(update.task)
        work = self._replica(key, meta)
        if self.s.loop.rmw:
            state = update.state or {}
            if update.indices.size and set(state) != set(self.optimizer.state_names):
                raise ConfigError(
                    f"read-my-writes needs the optimizer state in model updates; shard "
                    f"{update.shard} sent {sorted(state)} (a run with other settings?)"
                )
            work.copy.update(update.shard, mine, update.indices, state, update.rows)
            entry = ("u", update.shard, mine, update.indices, state, update.rows)
            self.journaled.took(work, meta, entry)
        else:
            assign_update(self.journaled, work, meta, update)
        meta["applied"] = meta.get("applied", 0) + 1
        meta["shards"][update.shard] = (update.version, mine)
        if update.offset is not None:
            meta.setdefault("offsets", {})[update.shard] = update.offset
        self.meta.update(meta)
        return True

    def _awaited(self, ctx, key: str, update):
        """A sync shard waits for this worker's push of ``update.waiting``: train what is
        buffered now, or, with nothing buffered, push an empty mini-batch for that clock."""
        clock = self.clock.value() or 0
        answer = answer_to_wait(clock, update.waiting, self.buffered.value() or 0)
        if answer is None:
            return
        if answer == "train":
            self.due.update(True)
            yield from self._drain(ctx, self._meta(update.task), flush=True)
            return
        for shard in range(self.s.loop.shards):
            empty = np.zeros(0, np.int64)
            push = Push(update.task, shard, key, clock, empty, empty_push(self.s.model.standardize))
            yield PUSHES, with_key(push)
        self.clock.update(clock + 1)

    # -- the examples ----------------------------------------------------------------------
    def _buffered_ids(self) -> list:
        """The buffered examples' event ids in arrival order (state holds them in chunks)."""
        head, tail = self.span.value() or (0, 0)
        return [i for seq in range(head, tail) for i in self.chunks.get(seq).event_ids]

    def _take_buffered(self, n: int) -> Examples:
        """The first ``n`` buffered examples, removed from state (reads only the chunks they
        are in; a chunk partly taken keeps its rest), then from the chunk being received."""
        head, tail = self.span.value() or (0, 0)
        taken: list[Examples] = []
        want = n
        while want > 0 and head < tail:
            chunk = self.chunks.get(head)
            taken.append(chunk.rows(0, want))
            if want < len(chunk):
                self.chunks.put(head, chunk.rows(want, len(chunk)))
            else:
                self.chunks.remove(head)
                head += 1
            want -= len(taken[-1])
        self.span.update((head, tail))
        if want > 0:
            taken.append(self.incoming.rows(0, want))
            self.incoming = self.incoming.rows(want, len(self.incoming))
        return Examples.concat(taken)

    def _example(self, value, ctx):
        chunk = value.examples
        count = (self.buffered.value() or 0) + len(chunk)
        self.buffered.update(count)
        # the chunk counts as buffered, but only what this call does not train goes into
        # state: examples trained at once never make the round trip through the state channel
        # (their pushes leave in this same call, so a checkpoint has all of them or none)
        self.incoming = chunk
        if count >= self._batch_size(self.clock.value() or 0):
            yield from self._drain(ctx, self._meta(value.task), flush=False)
        else:
            self._time_partial(ctx, count)
        rest, self.incoming = self.incoming, None
        if len(rest):
            head, tail = self.span.value() or (0, 0)
            for start, stop in state_pieces(len(rest), STATE_PIECE):
                self.chunks.put(tail, rest.rows(start, stop))  # one pickle per piece
                tail += 1
            self.span.update((head, tail))

    def _time_partial(self, ctx, count: int) -> None:
        """Start the batch timeout of a partial mini-batch (unless one runs). A chunk, or a
        drain that trains the full batches before it, can leave one behind."""
        size = self._batch_size(self.clock.value() or 0)
        if 0 < count < size and self.s.loop.batch_timeout_ms > 0:
            now = ctx.timer_service().current_processing_time()
            at = self.timer_at.value()
            if timer_lapsed(at, now, self.s.loop.batch_timeout_ms):
                arm_timer(ctx, self.timer_at, now + self.s.loop.batch_timeout_ms)

    def _cancel_timer(self, ctx) -> None:
        at = self.timer_at.value()
        if at is not None:
            ctx.timer_service().delete_processing_time_timer(at)
            self.timer_at.clear()

    def _timer(self, ctx):
        self.timer_at.clear()
        if self.buffered.value():  # else a timer that outlived its partial batch
            self.due.update(True)
        task = ctx.get_current_key().rsplit("#", 1)[0]
        yield from self._drain(ctx, self._meta(task), flush=True)

    def _drain(self, ctx, meta: dict, flush: bool):
        count, clock = self.buffered.value() or 0, self.clock.value() or 0
        flush = flush or bool(self.due.value())
        if not must_train(count, self._batch_size(clock), flush):
            return  # nothing to train: skip reading the buffered examples
        progress = self._progress(meta)  # no update arrives during a drain
        applied = [mine for _, mine in progress]
        # the consistency model and flow control decide how many may start
        sizes = plan_batches(count, clock, self.s.loop.batch_size, self.s.loop.warmup,
                             lambda c: self.consistency.may_start(c, applied), flush,
                             self._warm_from())  # fmt: skip
        n = sum(sizes)
        if n:  # else the examples wait in state (unread); the next model update retries
            examples = self._take_buffered(n)
            key, task = ctx.get_current_key(), examples.task
            version, start = sum(v for v, _ in progress), 0
            for size in sizes:  # no update arrives meanwhile: each batch is one staler
                batch = examples.rows(start, start + size)
                stale = staleness(clock, applied)
                yield from self._train(task, key, clock, batch, version, stale, meta)
                clock, start = clock + 1, start + size
            self.meta.update(meta)
            self.clock.update(clock)
            self.buffered.update(count - n)
            if n == count:
                self.due.clear()
            self._cancel_timer(ctx)  # the partial batch it timed has been trained
        if not flush:
            self._time_partial(ctx, count - n)

    def _progress(self, meta: dict) -> list:
        """Per shard, (its version, the last of my clocks it has applied) as last heard."""
        return [meta["shards"].get(s, (0, -1)) for s in range(self.s.loop.shards)]

    def _train(self, task, key, clock, batch, version, staleness, meta):
        indptr, indices, values = batch.indptr, batch.indices, batch.values
        labels = batch.labels.astype(np.float64)
        work = self._replica(key, meta)
        rows = prepare(indptr, indices, values, self.s.model.bits)
        offset = -sum(meta.get("offsets", {}).values())  # the shards' centring
        if self.s.loop.rmw and self.s.model.standardize:  # with my own pushes' share of it
            w, mine = work.copy.lookup_centred(rows.coords)
            offset -= mine
        else:
            w = work.copy.lookup(rows.coords)
        scores = batch_scores(rows, w, offset)
        drift = self._drifts(labels, scores, clock) if self.s.model.on_drift != "alert" else 0
        idx, g = rows.coords, batch_gradient(rows, labels, scores)
        if self.s.model.standardize:
            g = standardized_push(rows, g)
        elif self.s.model.kkt_filter:
            idx, g, held = kkt_filter(idx, g, w, self.s.model.l1, self.held.value() or NOTHING_HELD)
            self.held.update(held)
        for shard, part_idx, part_g in split_by_shard(idx, g, self.s.model.dim, self.s.loop.shards):
            if self.s.loop.rmw and part_idx.size:
                mine = part_g
                if self.s.model.standardize:  # replayed as the shard will apply it
                    mine = self.optimizer.self_contained(part_g)
                work.copy.push(shard, clock, part_idx, mine)
                self.journaled.took(work, meta, ("p", shard, clock, part_idx, mine))
            yield PUSHES, with_key(Push(task, shard, key, clock, part_idx, part_g, drift))
        labels = labels.astype(np.int64)
        lines = train_predictions(task, key, batch.event_ids, labels, scores, version,
                                   staleness, clock, self.s.topics.prediction_format)  # fmt: skip
        # the main output (decision 0015): Java takes each record from this generator and
        # hands it to the chained Kafka writer itself; a side output would be a call from
        # Python into Java, the writer's work made under the interpreter's lock
        yield from lines
        scored = Scored(task, labels, scores, version, staleness, drift, int(idx.size))
        yield PREDICTIONS, with_key(scored)

    def _drifts(self, labels: np.ndarray, scores: np.ndarray, clock: int) -> int:
        """The drifts detected so far in this worker's prequential loss, mini-batch ``clock``
        included: the shards act on each once (``--on-drift``), the evaluator reports it, and
        this worker's mini-batches start their warm-up again from the next clock."""
        detector, drifts, warm_from = self.drift.value() or (LossDrift(), 0, 0)
        fired = detector.add(log_losses(labels, scores))
        if fired:
            drifts, warm_from = drifts + len(fired), clock + 1
        self.drift.update((detector, drifts, warm_from))
        return drifts

    def _warm_from(self) -> int:
        """The clock the warm-up of the mini-batch sizes counts from (0, or the one after
        this worker's last drift detection)."""
        if self.s.model.on_drift == "alert":
            return 0
        found = self.drift.value()
        return found[2] if found else 0

    def _batch_size(self, clock: int) -> int:
        return self.s.loop.batch_size_at(clock - self._warm_from())


def _replay_rmw(replica: StateReplica, entry: tuple) -> None:
    if entry[0] == "u":
        replica.update(*entry[1:])
    else:
        replica.push(*entry[1:])
