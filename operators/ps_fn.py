"""The parameter server's shared pieces for its PyFlink adapters: the settings every operator
gets (``PsSettings``), the keyed-state helpers of the dense working copies
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
from dataclasses import dataclass, field

from connectors.errors import DecodeError
from connectors.messages import decode_update
from operators.dense_range import DenseRange
from operators.journal import Journaled, Working
from operators.keyed import DIGESTS, with_key
from operators.records import KeyedUpdates
from operators.settings import LoopSettings, ModelSettings, TrainTopics

# examples per keyed-state entry of a worker's buffer (operators/loop.state_pieces)
STATE_PIECE = 256


@dataclass(frozen=True)
class PsSettings:
    """What every parameter-server operator gets: the run's model, loop and topic settings
    (``operators.settings``, the objects themselves) and the run's identity; picklable."""

    run_id: str
    model: ModelSettings = field(default_factory=ModelSettings)
    loop: LoopSettings = field(default_factory=LoopSettings)
    topics: TrainTopics = field(default_factory=TrainTopics)
    fail_marker: str | None = None  # tests only: --inject-failure (operators.faults)
    checkpoint_dir: str | None = None
    init_model: str | None = None  # a snapshot (or folder of them) to warm-start from
    digests: bool = False  # emit state digests (``--digest-topic``)


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


def save_blocks(state):
    """A ``Journaled`` save: the blocks the working copy touched since the last compaction,
    into the MapState ``state`` (``meta["blocks"]``: the ids it holds)."""

    def save(work: Working, meta: dict) -> None:
        view = MapView(state, meta["blocks"])
        for bid, value in work.copy.take_touched().items():
            view[bid] = value

    return save


def replica_journal(journal, state, dim: int, block: int) -> Journaled:
    """The journaled copy of a replica of weights ``w`` (a worker's without read-my-writes,
    serve's): built from its blocks in ``state``, updates replayed by assignment."""
    return Journaled(
        journal,
        build=lambda key, meta: load_blocks(
            DenseRange(("w",), 0, dim, block), state, meta["blocks"]
        ),  # fmt: skip
        replay=lambda dr, entry: dr.assign(*entry),
        save=save_blocks(state),
    )


def assign_update(journaled: Journaled, work: Working, meta: dict, update) -> None:
    """Apply a model update to a replica's working copy, journaled: the one way replicas, the
    workers' and the server's, take updates."""
    work.copy.assign(update.indices, update.values)
    journaled.took(work, meta, (update.indices, update.values))


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


def fan_out_updates(workers: int, dim: int | None = None, lines=lambda value: value[0]):
    """Decode a window's model updates ``Row(lines)`` (gathered by ``connectors.ingest``) and
    hand every worker key of a task (``task#0`` .. ``task#W-1``) that task's updates as one
    record, in topic order (``KeyedUpdates`` in a ``KEYED`` row).

    The serve job's updates come one record each (``lines``: how a record's lines are read):
    its requests arrive one by one, and an update waiting for its window would wait for them.

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
        for update in _decoded(lines(value), dim):
            by_task.setdefault(update.task, []).append(update)
        for task, updates in by_task.items():
            for w in range(workers):  # decoded once here; numpy arrays pickle far faster
                yield with_key(KeyedUpdates(f"{task}#{w}", updates))  # than JSON parses

    return fan_out


def _decoded(lines, dim: int | None = None):
    """The updates among ``lines`` that decode, with indices inside ``dim`` (others are not
    ours to judge: another run may share the topic; skipped)."""
    for line in lines:
        try:
            yield decode_update(line, dim)
        except DecodeError:
            continue
