"""PyFlink adapters of the parameter server, the worker and the shard: they move records in
and out of Flink state and call the pure code of ``operators/ps.py``, ``loop.py`` and
``logistic.py``. The parser before them is ``parse_fn.py``, the evaluator after them
``evaluate_fn.py``.

Records between operators are tuples (pickled across the Python/Java bridge):

- examples ``("exs", task, worker_key, Examples)``: one worker's share of a batch of raw
  events, hashed, as columns (``operators/examples.py``)
- push    ``("push", task, shard, worker_key, clock, indices, grads)``
- batch   ``("pred", task, worker_key, event_ids, labels, scores, version, staleness, clock)``
- count   ``("count", name, n)`` (dead letters, rejected pushes) for the evaluator
- digest  JSON, with ``--digest-topic`` only: a SHA-256 of a key's state (see ``_Digests``)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np
from pyflink.common import Types
from pyflink.datastream import (
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    OutputTag,
)
from pyflink.datastream.state import (
    ListStateDescriptor,
    MapStateDescriptor,
    ValueStateDescriptor,
)

from connectors.errors import DecodeError
from connectors.events import DEFAULT_CLIP
from connectors.messages import ModelUpdate, decode_update
from operators.evaluation import REJECTED_COUNT
from operators.examples import Examples
from operators.faults import FailOnce
from operators.journal import Working, WorkingCopies
from operators.logistic import (
    batch_gradient,
    batch_scores,
    dimension,
    empty_push,
    prepare,
    standardized_push,
)
from operators.loop import (
    answer_to_wait,
    awaited_clock,
    duplicate_push,
    from_rolled_back_timeline,
    must_train,
    open_barrier,
    state_pieces,
)
from operators.optim import make_rule
from operators.ps import (
    BLOCK,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_TASKS,
    Consistency,
    DenseRange,
    Replica,
    ShardServer,
    StateReplica,
    TaskGate,
    batch_size_at,
    plan_batches,
    shard_width,
    split_by_shard,
    state_digest,
    timer_lapsed,
)

PICKLED = Types.PICKLED_BYTE_ARRAY()
DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
COUNTS = OutputTag("counts", PICKLED)
PREDICTIONS = OutputTag("predictions", PICKLED)  # a mini-batch's scores, for the evaluator
# to train-predictions, one record each (decision 0010: why not one array per mini-batch)
PREDICTION_LINES = OutputTag("prediction-lines", Types.STRING())
DIGESTS = OutputTag("digests", Types.STRING())
# examples per keyed-state entry of a worker's buffer (operators/loop.state_pieces)
STATE_PIECE = 256


@dataclass(frozen=True)
class PsSettings:
    """What every parameter-server operator needs to know; picklable."""

    run_id: str
    bits: int = 20
    shards: int = 4
    workers: int = 2
    batch_size: int = DEFAULT_BATCH_SIZE
    batch_timeout_ms: int = 200
    consistency: str = "async"
    optimizer: str = "ftrl"
    hyper: tuple = (("alpha", 0.2), ("beta", 1.0), ("l1", 0.0), ("l2", 0.0))
    standardize: bool = True  # online standardization of numeric coordinates (--standardize)
    warmup: bool = True  # mini-batch sizes grow from 1 up to batch_size (--warmup)
    update_threshold: float = 0.0
    input_topic: str = "events"
    fail_marker: str | None = None
    checkpoint_dir: str | None = None
    init_model: str | None = None  # a snapshot (or folder of them) to warm-start from
    block: int = BLOCK  # coordinates per keyed-state entry
    digests: bool = False  # emit state digests (``--digest-topic``)
    read_my_writes: bool = True  # workers see their own pushes at once (not in sync mode)
    max_in_flight: int = 16  # flow control: a worker's mini-batches not yet applied everywhere
    tasks: tuple | None = None  # the tasks it may train (``--tasks``; None: any)
    max_tasks: int = DEFAULT_MAX_TASKS  # at most this many of them (``--max-tasks``)
    clip: float | None = DEFAULT_CLIP  # |feature value| limit (``--clip-features``; 0: none)
    ndjson: bool = False  # a record holds many events, one per line (``--input-format``)
    batch_predictions: bool = False  # one prediction record per mini-batch (NDJSON)

    def task_gate(self) -> TaskGate:
        return TaskGate.of(self.tasks, self.max_tasks)

    @property
    def dim(self) -> int:
        return dimension(self.bits)

    @property
    def rmw(self) -> bool:
        """Read-my-writes in effect: a sync worker never runs ahead of its own pushes."""
        return self.read_my_writes and self.consistency != "sync"

    def make_optimizer(self):
        return make_rule(self.optimizer, self.standardize, **dict(self.hyper))

    def batch_size_at(self, clock: int) -> int:
        return batch_size_at(clock, self.batch_size, self.warmup)


def initial_models(s: PsSettings) -> dict:
    """The warm-start snapshots by task (empty without ``--init-model``)."""
    from connectors.snapshot import load_models

    return load_models(s.init_model) if s.init_model else {}


class _MapView:
    """Blocks in keyed MapState, as a mapping; only blocks known to exist are read.

    A MapState read of an absent key, under checkpointing, failed inside PyFlink 2.0's state
    channel ("A serializer has already been registered for the state" / "Unknown process
    bundle instruction id"), so the set of block ids is kept beside the blocks and a new
    block never costs a read.
    """

    def __init__(self, state, known: set):
        self.state, self.known = state, known

    def get(self, bid: int):
        return self.state.get(bid) if bid in self.known else None

    def __setitem__(self, bid: int, value) -> None:
        self.known.add(bid)
        self.state.put(bid, value)


def _load(dr: DenseRange, state, known: set) -> DenseRange:
    """A dense working copy filled from the blocks in keyed MapState (``load`` copies)."""
    for bid in known:
        dr.load(bid, state.get(bid))
    return dr


def _compact(work: Working, state, journal, meta: dict) -> None:
    """Write the blocks touched since the last compaction, then clear the journal."""
    view = _MapView(state, meta["blocks"])
    for bid, value in work.copy.take_touched().items():
        view[bid] = value
    journal.clear()
    meta["journal"] = 0


def replica_copy(copies, key, meta: dict, state, journal, dim: int, block: int) -> Working:
    """A replica's dense working copy of key ``key`` (weights ``w``), rebuilt from its blocks
    in ``state`` and its ``journal`` of updates when its stamp (updates applied) is stale."""
    return copies.get(
        key,
        meta.get("applied", 0),
        lambda: _load(DenseRange(("w",), 0, dim, block), state, meta["blocks"]),
        lambda: list(journal.get() or []) if meta.get("journal") else [],
        lambda dr, entry: dr.assign(*entry),
    )


def assign_journaled(work: Working, update, state, journal, meta: dict, every: int) -> None:
    """Apply a model update to a replica's working copy and journal it (compacting when the
    journal is long): the one way replicas, the workers' and the server's, take updates."""
    work.copy.assign(update.indices, update.values)
    journal.add((update.indices, update.values))
    meta["applied"] = meta.get("applied", 0) + 1
    meta["journal"] = meta.get("journal", 0) + 1
    work.stamp = meta["applied"]
    if meta["journal"] >= every:
        _compact(work, state, journal, meta)


class _Digests:
    """State digests of the keys of one operator instance, for ``--digest-topic``.

    Each key's first record in this process (after a start, a restore or a rescale) is
    ``"when": "first"`` with the digest of the state as found, before the record changes it;
    every record after it is ``"when": "after"`` with the digest of the state it left. So the
    last "after" of a key before a savepoint and its "first" after the restore must agree.
    """

    def __init__(self, s: PsSettings, kind: str):
        self.on, self.run_id, self.kind, self.seen = s.digests, s.run_id, kind, set()

    def around(self, ctx, digest, records):
        """``records`` (a generator) framed by the current key's digests; ``digest(key)``
        hashes now. Without digests, ``records`` itself (the key is not even asked for)."""
        if not self.on:
            return records
        return self._framed(ctx.get_current_key(), digest, records)

    def _framed(self, key: str, digest, records):
        if key not in self.seen:
            self.seen.add(key)
            yield DIGESTS, self._record(key, "first", digest(key))
        yield from records
        yield DIGESTS, self._record(key, "after", digest(key))

    def _record(self, key: str, when: str, digest: tuple) -> str:
        sha, position = digest
        return json.dumps({"run": self.run_id, "kind": self.kind, "key": key, "when": when,
                           "digest": sha, **position, "pid": os.getpid()})  # fmt: skip


def arm_timer(ctx, due_state, at: int) -> None:
    """Register a processing-time timer for ``at`` and record ``at`` in ``due_state``, the
    value state ``timer_lapsed`` reads: the two always change together."""
    ctx.timer_service().register_processing_time_timer(at)
    due_state.update(at)


def fan_out_updates(workers: int, dim: int | None = None):
    """Decode a window's model updates ``Row(lines)`` (gathered by ``connectors.ingest``) and
    hand every worker key of a task (``task#0`` .. ``task#W-1``) that task's updates as one
    record, in topic order.

    Updates reach the workers as keyed input rather than broadcast state, so an update that
    unblocks a worker is processed in that worker's key context and trains at once (no
    polling timers), and each worker's replica is its own keyed state. One record per window,
    not per update: a worker reads its two inputs in turn, one record each, so with examples
    arriving in chunks, updates one by one would queue up behind them (each mini-batch makes
    an update per shard for every worker) and the replicas would fall further and further
    behind.
    """

    def fan_out(value):
        by_task: dict[str, list] = {}
        for update in _decoded(value[0], dim):
            by_task.setdefault(update.task, []).append(update)
        for task, updates in by_task.items():
            for w in range(workers):  # decoded once here; numpy arrays pickle far faster
                yield f"{task}#{w}", updates  # than JSON parses

    return fan_out


def fan_out_each_update(workers: int, dim: int | None = None):
    """Copy each raw model update ``Row(line, partition, offset)``, decoded, to every worker
    key of its task: one record per key and update (the serve job, whose requests arrive one
    by one)."""

    def fan_out(value):
        for update in _decoded([value[0]], dim):
            for w in range(workers):
                yield f"{update.task}#{w}", update

    return fan_out


def _decoded(lines, dim: int | None = None):
    """The updates among ``lines`` that decode, with indices inside ``dim`` (others are not
    ours to judge: another run may share the topic; skipped)."""
    for line in lines:
        try:
            yield decode_update(line, dim)
        except DecodeError:
            continue


class WorkerFunction(KeyedCoProcessFunction):
    """A training worker, keyed by ``task#worker``: buffer examples in state, score a
    mini-batch with its replica, push the gradient to every shard, honour the consistency
    model. Input 1 is examples, input 2 the model updates read back from Kafka.
    """

    def __init__(self, s: PsSettings):
        self.s = s

    def open(self, runtime_context):
        self.consistency = Consistency.parse(self.s.consistency, self.s.max_in_flight)
        # buffered examples: one map entry per chunk (as it came from the parser), numbered;
        # span = (first, next) chunk number. A map, not a list state: PyFlink's state cache
        # re-sizes a cached list on every append, so a list grew quadratically dear while a
        # worker waited (flow control) with its input still arriving
        self.chunks = runtime_context.get_map_state(
            MapStateDescriptor("pending-chunks", Types.LONG(), PICKLED)
        )
        self.span = runtime_context.get_state(ValueStateDescriptor("pending-span", PICKLED))
        self.buffered = runtime_context.get_state(ValueStateDescriptor("buffered", Types.LONG()))
        self.clock = runtime_context.get_state(ValueStateDescriptor("clock", Types.LONG()))
        self.timer_at = runtime_context.get_state(ValueStateDescriptor("timer-at", Types.LONG()))
        # a partial batch whose time is up stays due until trained, even if blocked meanwhile
        self.due = runtime_context.get_state(ValueStateDescriptor("due", Types.BOOLEAN()))
        self.replica = runtime_context.get_map_state(
            MapStateDescriptor("replica", Types.LONG(), PICKLED)
        )
        # {"blocks": set of replica block ids, "shards": {shard: (version, my applied clock)},
        #  "applied": updates applied, "journal": entries in the journal}
        self.meta = runtime_context.get_state(ValueStateDescriptor("replica-meta", PICKLED))
        self.journal = runtime_context.get_list_state(
            ListStateDescriptor("replica-journal", PICKLED)
        )
        self.copies = WorkingCopies()  # a cache of the replica state, see operators/journal.py
        self.incoming: Examples | None = None  # the chunk being received, not yet in state
        self.init = initial_models(self.s)
        self.digests = _Digests(self.s, "worker")
        if self.s.rmw:
            self.optimizer = self.s.make_optimizer()
            # read-my-writes: my pushes not yet reflected, as of the last compaction (the
            # journal holds the ones since)
            self.own = runtime_context.get_state(ValueStateDescriptor("own-pushes", PICKLED))

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
        if self.s.rmw:
            fields["own"] = replica.own
        return state_digest(replica.arrays, fields), {"clock": clock, "applied": fields["applied"]}

    def process_element1(self, value, ctx):
        return self.digests.around(ctx, self._digest, self._example(value, ctx))

    def process_element2(self, value, ctx):
        return self.digests.around(ctx, self._digest, self._model(value, ctx))

    def on_timer(self, timestamp, ctx):
        return self.digests.around(ctx, self._digest, self._timer(ctx))

    def _replica(self, key: str, meta: dict) -> Working:
        """The replica's dense working copy (rebuilt from state when stale)."""
        if not self.s.rmw:
            return replica_copy(
                self.copies, key, meta, self.replica, self.journal, self.s.dim, self.s.block
            )
        return self.copies.get(
            key,
            _rmw_stamp(meta),
            lambda: self._state_replica(meta, self.own.value() or {}),
            lambda: list(self.journal.get() or []) if meta.get("journal") else [],
            _replay_rmw,
        )

    def _state_replica(self, meta: dict, own: dict) -> StateReplica:
        names = self.optimizer.state_names
        dr = _load(DenseRange(names, 0, self.s.dim, self.s.block), self.replica, meta["blocks"])
        own = {k: list(v) for k, v in own.items()}
        return StateReplica(self.optimizer, dr, own, dict(meta.get("shard-rows", {})))

    def _journal_rmw(self, work: Working, meta: dict, entry: tuple) -> None:
        """Journal one read-my-writes operation (already applied to ``work``); compact when
        the journal is long, saving the unreflected pushes with the blocks."""
        self.journal.add(entry)
        counter = "applied" if entry[0] == "u" else "pushed"
        meta[counter] = meta.get(counter, 0) + 1
        meta["journal"] = meta.get("journal", 0) + 1
        work.stamp = _rmw_stamp(meta)
        if meta["journal"] >= self.copies.compact_every:
            _compact(work, self.replica, self.journal, meta)
            self.own.update({k: list(v) for k, v in work.copy.own.items()})  # a copy: the
            # working copy's lists change after this, the state's must not
            meta["shard-rows"] = dict(work.copy.rows)

    def _meta(self, task: str) -> dict:
        meta = self.meta.value()
        if meta is None:
            meta = {"blocks": set(), "shards": {}}
            if task in self.init:  # warm start: the replica begins as the snapshot
                view = _MapView(self.replica, meta["blocks"])
                if self.s.rmw:
                    replica = self._state_replica(meta, {})
                    replica.warm(self.init[task].weights)
                    for bid, value in replica.take_touched().items():
                        view[bid] = value
                else:
                    Replica(view, self.s.block).load_dense(self.init[task].weights)
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
        if self.s.rmw:
            state = update.state or {}
            if update.indices.size and set(state) != set(self.optimizer.state_names):
                raise ValueError(
                    f"read-my-writes needs the optimizer state in model updates; shard "
                    f"{update.shard} sent {sorted(state)} (a run with other settings?)"
                )
            work.copy.update(update.shard, mine, update.indices, state, update.rows)
            entry = ("u", update.shard, mine, update.indices, state, update.rows)
            self._journal_rmw(work, meta, entry)
        else:
            assign_journaled(
                work, update, self.replica, self.journal, meta, self.copies.compact_every
            )
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
        for shard in range(self.s.shards):
            empty = np.zeros(0, np.int64)
            yield ("push", update.task, shard, key, clock, empty, empty_push(self.s.standardize))
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
        chunk = value[3]
        count = (self.buffered.value() or 0) + len(chunk)
        self.buffered.update(count)
        # the chunk counts as buffered, but only what this call does not train goes into
        # state: examples trained at once never make the round trip through the state channel
        # (their pushes leave in this same call, so a checkpoint has all of them or none)
        self.incoming = chunk
        if count >= self.s.batch_size_at(self.clock.value() or 0):
            yield from self._drain(ctx, self._meta(value[1]), flush=False)
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
        size = self.s.batch_size_at(self.clock.value() or 0)
        if 0 < count < size and self.s.batch_timeout_ms > 0:
            now = ctx.timer_service().current_processing_time()
            at = self.timer_at.value()
            if timer_lapsed(at, now, self.s.batch_timeout_ms):
                arm_timer(ctx, self.timer_at, now + self.s.batch_timeout_ms)

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
        if not must_train(count, self.s.batch_size_at(clock), flush):
            return  # nothing to train: skip reading the buffered examples
        progress = self._progress(meta)  # no update arrives during a drain
        applied = [mine for _, mine in progress]
        # the consistency model and flow control decide how many may start
        sizes = plan_batches(count, clock, self.s.batch_size, self.s.warmup,
                             lambda c: self.consistency.may_start(c, applied), flush)  # fmt: skip
        n = sum(sizes)
        if n:  # else the examples wait in state (unread); the next model update retries
            examples = self._take_buffered(n)
            key, task = ctx.get_current_key(), examples.task
            version, staleness = sum(v for v, _ in progress), clock - (min(applied) + 1)
            start = 0
            for size in sizes:
                batch = examples.rows(start, start + size)
                yield from self._train(task, key, clock, batch, version, staleness, meta)
                clock, staleness, start = clock + 1, staleness + 1, start + size
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
        return [meta["shards"].get(s, (0, -1)) for s in range(self.s.shards)]

    def _train(self, task, key, clock, batch, version, staleness, meta):
        indptr, indices, values = batch.indptr, batch.indices, batch.values
        labels = batch.labels.astype(np.float64)
        work = self._replica(key, meta)
        rows = prepare(indptr, indices, values, self.s.bits)
        offset = -sum(meta.get("offsets", {}).values())  # the shards' centring
        if self.s.rmw and self.s.standardize:  # with my own pushes' share of it
            w, mine = work.copy.lookup_centred(rows.coords)
            offset -= mine
        else:
            w = work.copy.lookup(rows.coords)
        scores = batch_scores(rows, w, offset)
        idx, g = rows.coords, batch_gradient(rows, labels, scores)
        if self.s.standardize:
            g = standardized_push(rows, g)
        for shard, part_idx, part_g in split_by_shard(idx, g, self.s.dim, self.s.shards):
            if self.s.rmw and part_idx.size:
                mine = part_g
                if self.s.standardize:  # replayed as the shard will apply it
                    mine = self.optimizer.self_contained(part_g)
                work.copy.push(shard, clock, part_idx, mine)
                self._journal_rmw(work, meta, ("p", shard, clock, part_idx, mine))
            yield ("push", task, shard, key, clock, part_idx, part_g)
        event_ids = batch.event_ids
        lines = prediction_lines(task, key, event_ids, labels.astype(np.int64), scores,
                                 version, staleness, clock, self.s.batch_predictions)  # fmt: skip
        for line in lines:
            yield PREDICTION_LINES, line
        yield (
            PREDICTIONS,
            (
                "pred",
                task,
                key,
                event_ids,
                labels.astype(np.int64),
                scores,
                version,
                staleness,
                clock,
            ),
        )


def _rmw_stamp(meta: dict) -> int:
    """Operations a read-my-writes replica has taken: updates applied plus own pushes."""
    return meta.get("applied", 0) + meta.get("pushed", 0)


def _replay_rmw(replica: StateReplica, entry: tuple) -> None:
    if entry[0] == "u":
        replica.update(*entry[1:])
    else:
        replica.push(*entry[1:])


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
            self.s.make_optimizer(),
            self.s.update_threshold,
            self.s.block,
            state_updates=self.s.rmw,
        )
        self.blocks = runtime_context.get_map_state(
            MapStateDescriptor("blocks", Types.LONG(), PICKLED)
        )
        self.meta = runtime_context.get_state(ValueStateDescriptor("meta", PICKLED))
        self.held = runtime_context.get_state(ValueStateDescriptor("held", PICKLED))
        self.journal = runtime_context.get_list_state(ListStateDescriptor("push-journal", PICKLED))
        self.copies = WorkingCopies()  # a cache of the blocks' state, see operators/journal.py
        self.init = initial_models(self.s)
        self.fault = FailOnce(self.s.fail_marker, self.s.checkpoint_dir)
        self.digests = _Digests(self.s, "shard")

    def _digest(self, key: str) -> tuple:
        """The digest of this shard's optimizer state, version, clocks, counters and held
        (sync) pushes."""
        meta = self.meta.value()
        if meta is None:
            return state_digest({}, {}), {"version": 0}
        task, shard = key.rsplit("/", 1)
        fields = {k: v for k, v in meta.items() if k not in ("blocks", "journal", "waited")}
        fields["held"] = self.held.value() or {}
        arrays = self._work(meta, task, int(shard)).copy.arrays
        return state_digest(arrays, fields), {"version": meta["version"]}

    def _meta(self, task: str, shard: int) -> dict:
        meta = self.meta.value()
        if meta is None:
            meta = _new_meta()
            if task in self.init:  # warm start: this shard's range of the snapshot
                width = shard_width(self.s.dim, self.s.shards)
                blocks = _MapView(self.blocks, meta["blocks"])
                self.server.warm(
                    blocks, self.init[task].weights, shard * width, (shard + 1) * width
                )
        return meta

    def process_element(self, push, ctx):
        return self.digests.around(ctx, self._digest, self._push(push))

    def _push(self, push):
        _, task, shard, worker, clock, idx, g = push
        self.fault.tick()
        meta = self._meta(task, shard)
        if duplicate_push(clock, meta["clock"].get(worker, -1)):
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
        ready, held, meta["next_clock"] = open_barrier(held, meta["next_clock"], self.s.workers)
        for round_clock, round_pushes in ready:
            workers = sorted(round_pushes)
            uniq, summed = self.server.optimizer.combine([round_pushes[w] for w in workers])
            pushes = [(w, round_clock) for w in workers]
            yield from self._apply(meta, task, shard, pushes, uniq, summed)
        self.held.update(held)
        awaited = awaited_clock(held, meta["next_clock"], meta.get("waited"))
        if awaited is not None:
            meta["waited"] = awaited  # say once per clock who is awaited
            empty = (np.zeros(0, np.int64), np.zeros(0))
            yield self._update(meta, task, shard, empty, [], waiting=awaited)

    def _work(self, meta, task, shard) -> Working:
        """The shard's dense working copy (rebuilt from blocks + journal when stale)."""
        width = shard_width(self.s.dim, self.s.shards)
        names = (*self.server.optimizer.state_names, "sent")
        return self.copies.get(
            f"{task}/{shard}",
            meta["version"],
            lambda: self.server.load_offset(
                _load(
                    DenseRange(names, shard * width, (shard + 1) * width, self.s.block),
                    self.blocks,
                    meta["blocks"],
                )
            ),
            lambda: list(self.journal.get() or []) if meta.get("journal") else [],
            lambda dr, entry: self.server.apply_dense(dr, *entry),
        )

    def _apply(self, meta, task, shard, pushes, idx, g):
        work = self._work(meta, task, shard)
        rows = meta.get("rows", 0)
        if g.ndim == 2:  # standardized: the running row count goes in the push's last row
            g = g.copy()
            rows = g[-1, 0] = rows + g[-1, 0]
        result, state = self.server.apply_dense(work.copy, idx, g), None
        if result is None:
            meta["rejected"] += 1
            result = (np.zeros(0, np.int64), np.zeros(0))
            yield COUNTS, ("count", REJECTED_COUNT, 1)
        else:
            if self.s.rmw:  # the workers' read-my-writes needs the state, not only weights
                local = result[0] - work.copy.lo
                state = {k: work.copy.arrays[k][local] for k in self.server.optimizer.state_names}
            self.journal.add((idx, g))
            meta["journal"] = meta.get("journal", 0) + 1
            meta["rows"] = int(rows)
        meta["version"] += 1
        work.stamp = meta["version"]
        if meta.get("journal", 0) >= self.copies.compact_every:
            _compact(work, self.blocks, self.journal, meta)
        for worker, clock in pushes:
            meta["clock"][worker] = clock
            meta["pushes_applied"] += 1
        offset = work.copy.offset if self.s.standardize else None
        yield self._update(
            meta, task, shard, result, [[w, c] for w, c in pushes], state=state, offset=offset
        )

    def _update(
        self, meta, task, shard, changed, applied, waiting=None, state=None, offset=None
    ) -> bytes:
        """The model-update record of this shard's state: its version, vector clock and
        counters, with the ``changed`` (indices, absolute values) and, for read-my-writes,
        the optimizer ``state`` at those indices."""
        return ModelUpdate(
            run=self.s.run_id,
            task=task,
            shard=shard,
            version=meta["version"],
            clock=dict(meta["clock"]),
            indices=changed[0],
            values=changed[1],
            applied=applied,
            rejected=meta["rejected"],
            ts=int(time.time() * 1000),
            pushes_applied=meta["pushes_applied"],
            duplicates_skipped=meta["duplicates_skipped"],
            waiting=waiting,
            state=state,
            offset=offset,
            rows=meta.get("rows", 0) if offset is not None else None,
            bits=self.s.bits,
        ).to_bytes()


def prediction_lines(task, worker, event_ids, labels, scores, version, staleness, clock,
                     batched: bool = False) -> list[str]:  # fmt: skip
    """The ``train-predictions`` records of a mini-batch: one JSON object per event, or with
    ``batched`` one record holding them all, one per line (NDJSON).

    >>> prediction_lines("ctr", "ctr#0", ["e1", "e2"], np.array([1, 0]), np.array([.9, .2]),
    ...                  7, 0, 3, batched=True)
    ['{"event_id":"e1","task":"ctr","label":1,"score":0.9,"model_version":7,"staleness":0,\
"worker":"ctr#0","clock":3}\\n{"event_id":"e2","task":"ctr","label":0,"score":0.2,\
"model_version":7,"staleness":0,"worker":"ctr#0","clock":3}']
    """
    tail = f',"model_version":{version},"staleness":{staleness},"worker":{json.dumps(worker)},'
    tail += f'"clock":{clock}}}'
    head = f',"task":{json.dumps(task)},"label":'
    lines = [
        f'{{"event_id":{json.dumps(event_id)}{head}{label},"score":{score!r}{tail}'
        for event_id, label, score in zip(
            event_ids, labels.tolist(), scores.tolist(), strict=True
        )  # fmt: skip
    ]
    return ["\n".join(lines)] if batched else lines
