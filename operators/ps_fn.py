"""The parameter server's shared pieces for its PyFlink adapters: the settings every operator
gets (``PsSettings``), the side outputs, the keyed-state helpers of the dense working copies
(``operators/journal.py``), the state digests and the fan-out of model updates to the workers.
The worker is ``worker_fn.py``, the shard ``shard_fn.py``; the parser before them is
``parse_fn.py``, the evaluator after them ``evaluate_fn.py``.

Records between operators are the named tuples of ``operators/records.py`` (examples, pushes,
prediction batches, counts), model updates as bytes, and with ``--digest-topic`` JSON digests
of a key's state (see ``Digests``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from pyflink.common import Types
from pyflink.datastream import OutputTag

from connectors.errors import DecodeError
from connectors.events import DEFAULT_CLIP
from connectors.messages import decode_update
from operators.dense_range import DenseRange
from operators.journal import Working
from operators.logistic import (
    dimension,
)
from operators.optim import make_rule
from operators.ps import BLOCK, DEFAULT_BATCH_SIZE, DEFAULT_MAX_TASKS, TaskGate, batch_size_at

PICKLED = Types.PICKLED_BYTE_ARRAY()
DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
COUNTS = OutputTag("counts", PICKLED)
PREDICTIONS = OutputTag("predictions", PICKLED)  # a mini-batch's scores, for the evaluator
# to train-predictions, one record each (decision 0010: why not one array per mini-batch)
PUSHES = OutputTag("pushes", PICKLED)  # a worker's gradients, for the shards
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
    from operators.snapshot import load_models

    return load_models(s.init_model) if s.init_model else {}


class MapView:
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


def load_blocks(dr: DenseRange, state, known: set) -> DenseRange:
    """A dense working copy filled from the blocks in keyed MapState (``load`` copies)."""
    for bid in known:
        dr.load(bid, state.get(bid))
    return dr


def compact(work: Working, state, journal, meta: dict) -> None:
    """Write the blocks touched since the last compaction, then clear the journal."""
    view = MapView(state, meta["blocks"])
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
        lambda: load_blocks(DenseRange(("w",), 0, dim, block), state, meta["blocks"]),
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
        compact(work, state, journal, meta)


class Digests:
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
