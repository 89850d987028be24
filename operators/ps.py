"""The parameter server's pure parts: range sharding, the shard's server function, the
worker's replica and the consistency rule. No pyflink import: the Flink adapters
(``operators/worker_fn.py``, ``shard_fn.py``) only move these objects' inputs and outputs in
and out of state.

Coordinates ``[0, 2**bits]`` (the last one is the intercept) are split into ``S`` contiguous
ranges (Li et al., OSDI 2014, range partitioning); inside a shard they are stored in blocks of
``BLOCK`` coordinates, so a checkpoint only rewrites the blocks a push touched.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import MutableMapping
from dataclasses import dataclass, field

import numpy as np

from connectors.errors import ConfigError
from operators.optim import B_M2, B_MEAN, ROWS

BLOCK = 4096  # the default; `train --block-size` chooses (see the README's measurements)
DEFAULT_BATCH_SIZE = 1000  # `train --batch-size` (decision 0009)


def shard_width(dim: int, shards: int) -> int:
    return -(-dim // shards)


def timer_lapsed(at: int | None, now: int, period_ms: int) -> bool:
    """Whether a keyed function must register a new processing-time timer: none is pending
    (``at`` is None), or the one recorded for ``at`` is more than a period overdue, lost in a
    restore (its flag in state came back, the timer did not fire; a function that trusted
    the flag would never set another).

    >>> timer_lapsed(None, 5_000, 200), timer_lapsed(5_100, 5_000, 200)
    (True, False)
    >>> timer_lapsed(4_900, 5_000, 200), timer_lapsed(4_700, 5_000, 200)
    (False, True)
    """
    return at is None or at < now - period_ms


def batch_size_at(clock: int, batch_size: int, warmup: bool = True) -> int:
    """The size of mini-batch number ``clock``: with ``warmup`` it grows by an eighth per
    mini-batch from 1 (``floor(1.125**clock)``, in integers) up to ``batch_size``, so a young
    model takes many small steps (with 1,000: 59 steps over the first ~8,000 events, where
    doubling took 10 over 1,023; decision 0009).

    >>> [batch_size_at(k, 1000) for k in (0, 5, 6, 10, 20, 40, 58, 59)]
    [1, 1, 2, 3, 10, 111, 926, 1000]
    """
    if not warmup:
        return batch_size
    c = min(clock, 8 * batch_size.bit_length())  # 1.125**8 > 2: past this it is batch_size
    return max(1, min(batch_size, 9**c // 8**c))


def whole_batches(limit: int, batch_size: int, warmup: bool = True) -> tuple[int, int]:
    """``(events, mini-batches)``: the most events, up to ``limit``, that one worker cuts into
    whole mini-batches only (a run with ``--batch-timeout 0`` trains no partial one).

    >>> whole_batches(4100, 100)
    (4064, 72)
    """
    events = clock = 0
    while events + (size := batch_size_at(clock, batch_size, warmup)) <= limit:
        events, clock = events + size, clock + 1
    return events, clock


def plan_batches(count: int, clock: int, batch_size: int, warmup: bool, may_start, flush: bool):
    """Sizes of the mini-batches to cut now from ``count`` buffered examples, the first one
    number ``clock``: full ones while ``may_start(clock)`` allows, and a partial last one
    when ``flush``.

    >>> [batch_size_at(c, 4) for c in (10, 11, 12)]
    [3, 3, 4]
    >>> plan_batches(9, 10, 4, True, lambda c: True, flush=False)
    [3, 3]
    >>> plan_batches(9, 10, 4, True, lambda c: True, flush=True)
    [3, 3, 3]
    >>> plan_batches(10, 20, 4, True, lambda c: c < 21, flush=True)
    [4]
    """
    sizes, left = [], count
    while left > 0:
        size = batch_size_at(clock, batch_size, warmup)
        if (left < size and not flush) or not may_start(clock):
            break
        sizes.append(min(size, left))
        left -= sizes[-1]
        clock += 1
    return sizes


def split_by_shard(idx: np.ndarray, g: np.ndarray, dim: int, shards: int) -> list:
    """Split sorted ``(idx, g)`` into one ``(shard, idx, g)`` per shard, empty ones included
    (an empty push still advances that shard's clock for the worker)."""
    cuts = np.searchsorted(idx, np.arange(1, shards) * shard_width(dim, shards))
    if g.ndim == 2:  # a standardized push: every part keeps the mini-batch's last row
        return [
            (s, part_idx, np.vstack((part_g, g[-1:])))
            for s, (part_idx, part_g) in enumerate(
                zip(np.split(idx, cuts), np.split(g[:-1], cuts), strict=True)
            )
        ]
    return [
        (s, part_idx, part_g)
        for s, (part_idx, part_g) in enumerate(
            zip(np.split(idx, cuts), np.split(g, cuts), strict=True)
        )
    ]


@dataclass(frozen=True)
class Consistency:
    """``async`` (never wait), ``bounded:TAU`` (bounded delay) or ``sync`` (BSP), plus flow
    control in every mode: at most ``max_in_flight`` of a worker's mini-batches not yet
    applied by every shard (``None``: no limit).

    Examples
    --------
    >>> Consistency.parse("bounded:2").may_start(clock=5, applied=[2, 3])
    True
    >>> Consistency.parse("bounded:2").may_start(clock=5, applied=[1, 3])
    False
    >>> Consistency.parse("async", max_in_flight=3).may_start(clock=5, applied=[1, 3])
    False
    """

    mode: str
    tau: int = 0
    max_in_flight: int | None = None

    @classmethod
    def parse(cls, text: str, max_in_flight: int | None = None) -> Consistency:
        if text in ("async", "sync"):
            return cls(text, 0, max_in_flight)
        if text.startswith("bounded:") and text[8:].isdigit():
            return cls("bounded", int(text[8:]), max_in_flight)
        raise ConfigError(
            f"consistency must be async, sync or bounded:TAU (TAU >= 0), got {text!r}"
        )

    def may_start(self, clock: int, applied: list[int]) -> bool:
        """May a worker start mini-batch ``clock`` (0-based) given, per shard, the last of its
        own clocks that shard has applied (-1 for none)?"""
        done = min(applied, default=clock - 1)  # every shard has applied my clocks up to here
        if self.max_in_flight is not None and clock - (done + 1) >= self.max_in_flight:
            return False
        if self.mode == "async":
            return True
        tau = 0 if self.mode == "sync" else self.tau
        return done >= clock - tau - 1

    def __str__(self) -> str:
        return f"bounded:{self.tau}" if self.mode == "bounded" else self.mode


DEFAULT_MAX_TASKS = 8  # each costs dense copies in every worker and shard (~57 MiB at 2^20)


@dataclass
class TaskGate:
    """Which tasks a job trains: those in ``allowed`` (None: any), at most ``max_tasks`` of
    them, admitted in the order they arrive. Every task costs dense working copies in every
    worker and shard, so a stream that invents task names must not be able to add them.

    Examples
    --------
    >>> gate = TaskGate(max_tasks=1)
    >>> gate.refuse("ctr") is None, gate.refuse("ctr") is None
    (True, True)
    >>> gate.refuse("fraud")
    "task 'fraud' refused: --max-tasks 1 already admitted ctr"
    >>> TaskGate(allowed=frozenset({"ctr"})).refuse("x")
    "task 'x' refused: not in --tasks ctr"
    """

    allowed: frozenset | None = None
    max_tasks: int = DEFAULT_MAX_TASKS
    admitted: set = field(default_factory=set)

    @classmethod
    def of(cls, tasks, max_tasks: int) -> TaskGate:
        """The gate of ``--tasks`` (a sequence of names, or None: any) and ``--max-tasks``."""
        return cls(frozenset(tasks) if tasks is not None else None, max_tasks)

    def refuse(self, task: str) -> str | None:
        """None if ``task`` is admitted (now or before), else the reason it is refused."""
        if task in self.admitted:
            return None
        if self.allowed is not None and task not in self.allowed:
            return f"task {task!r} refused: not in --tasks {','.join(sorted(self.allowed))}"
        if len(self.admitted) >= self.max_tasks:
            shown = ",".join(sorted(self.admitted)[:5]) + ("..." if self.max_tasks > 5 else "")
            return f"task {task!r} refused: --max-tasks {self.max_tasks} already admitted {shown}"
        self.admitted.add(task)
        return None


class ShardServer:
    """The server-side function of one shard: apply a push, return what changed.

    ``blocks`` maps a block id to that block's arrays: the optimizer's state plus ``sent``,
    the weights last broadcast (for the significantly-modified filter).
    """

    def __init__(
        self, optimizer, threshold: float = 0.0, block: int = BLOCK, state_updates: bool = False
    ):
        self.optimizer = optimizer
        self.threshold = threshold
        self.block = block
        # updates feed state replicas (read-my-writes): with no filter, every coordinate whose
        # state changed is sent, even when its weight did not move (L1 holds it at 0)
        self.send_all = state_updates and threshold == 0
        self.centring = hasattr(optimizer, "offsets")

    def load_offset(self, dr: DenseRange) -> DenseRange:
        """Sum the centring of a working copy filled from stored blocks."""
        if self.centring:
            dr.offset = float(self.optimizer.offsets(dr.arrays).sum())
        return dr

    def _moved(self, w: np.ndarray, sent: np.ndarray) -> np.ndarray:
        if self.send_all:
            return np.ones(w.size, bool)
        if self.threshold == 0:  # the same, for finite weights, in one operation
            return w != sent
        return np.abs(w - sent) > self.threshold

    def _block(self, blocks: MutableMapping, bid: int) -> dict[str, np.ndarray]:
        arrays = blocks.get(bid)
        if arrays is None:
            arrays = self.optimizer.init_state(self.block)
            arrays["sent"] = np.zeros(self.block)
        return arrays

    def warm(self, blocks: MutableMapping, w: np.ndarray, lo: int, hi: int) -> None:
        """Start the coordinates ``[lo, hi)`` from dense weights ``w`` (a warm start: the
        optimizer's history is empty, ``sent`` equals ``w``)."""
        nz = np.flatnonzero(w[lo:hi]) + lo
        bids = nz // self.block
        cuts = np.flatnonzero(np.diff(bids)) + 1
        for part in np.split(nz, cuts) if nz.size else []:
            bid = int(part[0] // self.block)
            arrays = self._block(blocks, bid)
            local = part % self.block
            self.optimizer.warm(arrays, local, w[part])
            arrays["sent"][local] = self.optimizer.weights(arrays, local)
            blocks[bid] = arrays

    def warm_dense(self, dr: DenseRange, w: np.ndarray) -> None:
        """``warm`` on a dense working copy: the non-zero weights of ``w`` in its range."""
        hi = min(w.size, dr.lo + dr.arrays["sent"].size)
        nz = np.flatnonzero(w[dr.lo : hi]) + dr.lo
        local = nz - dr.lo
        self.optimizer.warm(dr.arrays, local, w[nz])
        dr.arrays["sent"][local] = self.optimizer.weights(dr.arrays, local)
        dr.mark(nz)

    def apply_dense(
        self, dr: DenseRange, idx: np.ndarray, g: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``apply`` on a dense working copy (``dr.arrays`` holds the optimizer's arrays and
        ``sent``): the same arithmetic, element for element, with no loop over blocks."""
        if idx.size == 0:
            return idx, np.zeros(0)
        local = idx - dr.lo if dr.lo else idx
        gathered = {k: dr.arrays[k][local] for k in self.optimizer.state_names}
        sent = dr.arrays["sent"]
        before = sent[local]
        # without a filter ``sent`` always holds the current weights (every change is sent,
        # and a warm start sends what its state gives), so the rule need not compute them
        new, w = self.optimizer.step(gathered, g, before if self.threshold == 0 else None)
        if not _finite(w, *new.values()):  # a non-finite gradient makes them non-finite too
            return None
        for k, v in new.items():
            dr.arrays[k][local] = v
        if self.centring:  # a standardized rule: the range's centring, kept as a sum
            offsets = self.optimizer.offsets
            dr.offset += float(offsets(new).sum() - offsets(gathered).sum())
        moved = self._moved(w, before)
        dr.mark(idx)
        if moved.all():  # the common case without a filter: no boolean indexing
            sent[local] = w
            return idx, w
        sent[local[moved]] = w[moved]
        return idx[moved], w[moved]

    def apply(
        self, blocks: MutableMapping, idx: np.ndarray, g: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Apply gradients; return ``(changed idx, new weights)``, or ``None`` (nothing
        written) when the push or its result is not finite."""
        if idx.size == 0:
            return idx, np.zeros(0)
        if not np.all(np.isfinite(g)):
            return None
        bids = idx // self.block
        cuts = np.flatnonzero(np.diff(bids)) + 1
        groups = list(zip(np.split(idx, cuts), np.split(g, cuts), strict=True))
        staged = []
        for part_idx, part_g in groups:
            bid = int(part_idx[0] // self.block)
            arrays = self._block(blocks, bid)
            local = part_idx % self.block
            gathered = {k: arrays[k][local] for k in self.optimizer.state_names}
            new, w = self.optimizer.step(gathered, part_g)
            if not _finite(w, *new.values()):
                return None
            staged.append((bid, arrays, local, new, w))
        out_idx, out_w = [], []
        for bid, arrays, local, new, w in staged:
            for k, v in new.items():
                arrays[k][local] = v
            moved = self._moved(w, arrays["sent"][local])
            arrays["sent"][local[moved]] = w[moved]
            blocks[bid] = arrays
            out_idx.append(local[moved] + bid * self.block)
            out_w.append(w[moved])
        return np.concatenate(out_idx), np.concatenate(out_w)


def _finite(*arrays: np.ndarray) -> bool:
    """All entries finite: a NaN or an infinity makes a sum non-finite, and one sum per array
    is cheaper than ``isfinite().all()`` (a sum that overflows past 1e308 counts as not finite)."""
    return math.isfinite(sum(float(a.sum()) for a in arrays))


# a stored block is sparse when under 1/SPARSE_BELOW of its coordinates are non-zero: an
# index (4 bytes) per coordinate beside its values costs less than the zeros
SPARSE_BELOW = 2


class DenseRange:
    """A working copy, dense in memory, of arrays that Flink state stores in blocks.

    Covers the block-aligned range around coordinates ``[lo, hi)``; block ``bid`` is the
    slice of ``block`` coordinates starting at ``bid * block``. ``touched`` collects the ids of
    the blocks written since the last ``take_touched``: those are what a compaction writes.

    Examples
    --------
    >>> dr = DenseRange(("w",), lo=5, hi=12, block=4)
    >>> dr.lo, dr.arrays["w"].size
    (4, 8)
    >>> dr.assign(np.array([6, 9]), np.array([1.0, 2.0]))
    >>> dr.lookup(np.array([6, 9, 10])).tolist(), sorted(dr.touched)
    ([1.0, 2.0, 0.0], [1, 2])
    >>> sorted(dr.take_touched())
    [1, 2]
    """

    def __init__(self, names, lo: int, hi: int, block: int = BLOCK):
        self.block = block
        self.lo = (lo // block) * block
        size = -(-hi // block) * block - self.lo
        self.arrays = {name: np.zeros(size) for name in names}
        self._first = self.lo // block
        self._shift = block.bit_length() - 1 if block & (block - 1) == 0 else None
        self._dirty = np.zeros(size // block, bool)  # one flag per block: a scatter per call
        self.offset = 0.0  # a standardized rule's centring over the range (ShardServer's)

    @property
    def touched(self) -> set:
        """Ids of the blocks written since the last ``take_touched``."""
        return set((np.flatnonzero(self._dirty) + self._first).tolist())

    def _slice(self, bid: int) -> slice:
        start = bid * self.block - self.lo
        return slice(start, start + self.block)

    def load(self, bid: int, value) -> None:
        """Copy one stored block in: a dict of arrays by name (or the array of the only
        name), or the sparse form ``(local indices, that)`` of ``take_touched``."""
        block = self._slice(bid)
        where = block
        if isinstance(value, tuple):
            local, value = value
            where = local + block.start
            for arr in self.arrays.values():
                arr[block] = 0.0
        if not isinstance(value, dict):
            (name,) = self.arrays
            value = {name: value}
        for name, part in value.items():
            self.arrays[name][where] = part

    def mark(self, idx: np.ndarray) -> None:
        local = idx - self.lo
        self._dirty[local >> self._shift if self._shift is not None else local // self.block] = 1

    def take_touched(self) -> dict:
        """Copies of the touched blocks, in the stored form; forgets them.

        A block whose coordinates are mostly zero in every array (hashed features fill a
        block thinly: the bench stream's ~10,700 distinct tokens over 256 blocks of 4,096)
        is stored sparse, as ``(local indices of the non-zero coordinates, their values)``,
        so a compaction writes what the model holds, not the block's width.
        """
        out = {}
        names = list(self.arrays)
        for bid in sorted(self.touched):
            where = self._slice(bid)
            parts = [self.arrays[name][where] for name in names]
            present = parts[0] != 0
            for part in parts[1:]:
                present |= part != 0
            local = np.flatnonzero(present)
            sparse = local.size * SPARSE_BELOW < self.block
            if sparse:
                local = local.astype(np.int32)
            taken = [part[local] if sparse else part.copy() for part in parts]  # copies
            stored = dict(zip(names, taken, strict=True)) if len(names) > 1 else taken[0]
            out[bid] = (local, stored) if sparse else stored
        self._dirty[:] = False
        return out

    # a replica's operations (one array, ``w``)
    def lookup(self, idx: np.ndarray) -> np.ndarray:
        return self.arrays["w"][idx - self.lo if self.lo else idx]

    def assign(self, idx: np.ndarray, w: np.ndarray) -> None:
        if idx.size:
            self.arrays["w"][idx - self.lo if self.lo else idx] = w
            self.mark(idx)

    def load_dense(self, w: np.ndarray) -> None:
        """Assign the non-zero entries of dense weights ``w`` that fall in this range."""
        hi = min(w.size, self.lo + self.arrays["w"].size)
        nz = np.flatnonzero(w[self.lo : hi]) + self.lo
        self.assign(nz, w[nz])


class Replica:
    """A worker's copy of the weights, block by block, rebuilt from the update stream.

    ``blocks`` maps block id -> weights array; any mapping (a dict, or Flink state).
    """

    def __init__(self, blocks: MutableMapping | None = None, block: int = BLOCK):
        self.blocks = {} if blocks is None else blocks
        self.block = block

    def assign(self, idx: np.ndarray, w: np.ndarray) -> None:
        if idx.size == 0:
            return
        bids = idx // self.block
        cuts = np.flatnonzero(np.diff(bids)) + 1
        for part_idx, part_w in zip(np.split(idx, cuts), np.split(w, cuts), strict=True):
            bid = int(part_idx[0] // self.block)
            block = self.blocks.get(bid)
            block = np.zeros(self.block) if block is None else block
            block[part_idx % self.block] = part_w
            self.blocks[bid] = block

    def lookup(self, idx: np.ndarray) -> np.ndarray:
        out = np.zeros(idx.size)
        if idx.size == 0:
            return out
        bids = idx // self.block
        cuts = np.flatnonzero(np.diff(bids)) + 1
        start = 0
        for part in np.split(idx, cuts):
            block = self.blocks.get(int(part[0] // self.block))
            if block is not None:
                out[start : start + part.size] = block[part % self.block]
            start += part.size
        return out

    def load_dense(self, w: np.ndarray, lo: int = 0, hi: int | None = None) -> None:
        """Assign the non-zero blocks of dense weights ``w`` within ``[lo, hi)``."""
        hi = w.size if hi is None else min(hi, w.size)
        nz = np.flatnonzero(w[lo:hi]) + lo
        self.assign(nz, w[nz])

    def dense(self, dim: int) -> np.ndarray:
        w = np.zeros(dim)
        for bid, block in self.blocks.items():
            lo = bid * self.block
            w[lo : min(dim, lo + self.block)] = block[: min(self.block, dim - lo)]
        return w


class StateReplica:
    """A worker's replica of the shards' *optimizer state* with read-my-writes: the worker
    scores with the shards' state as last received plus its own pushes that no update has
    reflected yet, applied in clock order by the same update rule (the "read-my-writes"
    guarantee of Stale Synchronous Parallel, Ho et al., NIPS 2013).

    An async worker otherwise scores with weights that miss every mini-batch in flight
    around the loop, its own included; here it misses only the other workers' ones.
    ``dr`` is a ``DenseRange`` over the optimizer's state names; ``own`` maps a shard to its
    ``(clock, idx, g)`` pushes of this worker not yet reflected, in clock order.

    Examples
    --------
    >>> from operators.optim import Sgd
    >>> rep = StateReplica(Sgd(lr=0.5), DenseRange(("w",), 0, 4, block=4))
    >>> rep.push(0, 0, np.array([1]), np.array([2.0]))
    >>> rep.lookup(np.array([1, 2])).tolist()  # my push, not yet reflected, already counts
    [-1.0, 0.0]
    >>> rep.update(0, 0, np.array([1]), {"w": np.array([-1.5])})  # reflects it (and more)
    >>> rep.lookup(np.array([1])).tolist(), rep.own
    ([-1.5], {})
    """

    def __init__(
        self, optimizer, dr: DenseRange, own: dict | None = None, rows: dict | None = None
    ):
        self.optimizer, self.dr = optimizer, dr
        self.own = {} if own is None else own
        # a standardized rule: per shard, the rows it had counted as of its last update; my
        # self-contained pushes carry their own rows, replayed as running totals from these
        self.rows = {} if rows is None else rows
        self.centring = hasattr(optimizer, "offsets")

    @property
    def arrays(self) -> dict:
        return self.dr.arrays

    def take_touched(self) -> dict:
        return self.dr.take_touched()

    def push(self, shard: int, clock: int, idx: np.ndarray, g: np.ndarray) -> None:
        """Remember my push to ``shard`` until an update of that shard reflects ``clock``
        (a non-finite push is left out: the shard rejects it)."""
        if idx.size and np.all(np.isfinite(g)):
            self.own.setdefault(shard, []).append((clock, idx, g))

    def update(
        self, shard: int, mine: int, idx: np.ndarray, arrays: dict, rows: int | None = None
    ) -> None:
        """A shard's update: its absolute state at ``idx``, reflecting my pushes up to clock
        ``mine`` (its vector clock for me); those pushes are forgotten. ``rows``: the rows
        the shard had counted (standardized)."""
        if rows is not None:
            self.rows[shard] = rows
        if idx.size:
            for name in self.optimizer.state_names:
                self.dr.arrays[name][idx - self.dr.lo] = arrays[name]
            self.dr.mark(idx)
        kept = [p for p in self.own.get(shard, ()) if p[0] > mine]
        if kept:
            self.own[shard] = kept
        else:
            self.own.pop(shard, None)

    def lookup(self, idx: np.ndarray) -> np.ndarray:
        """Weights at sorted unique ``idx``: the received state with my unreflected pushes."""
        return self.optimizer.weights(self._replayed(idx), np.arange(idx.size))

    def lookup_centred(self, idx: np.ndarray) -> tuple[np.ndarray, float]:
        """``lookup`` for a standardized rule, and what my unreflected pushes change in the
        centring (the sum of ``offsets``) over every coordinate they touch, not only ``idx``.
        Only a coordinate that is or becomes numeric (centred) can change it: one centred
        already, or one whose pushed values vary or differ from what the shard had."""
        pushes = self._pushes()
        if not pushes or not idx.size:
            return self.lookup(idx), 0.0
        at = np.concatenate([p[1] for p in pushes])
        g = np.concatenate([p[2] for p in pushes])
        local = at - self.dr.lo
        arrays = self.dr.arrays
        seen = arrays["count"][local] > 0
        varies = (arrays["center"][local] != 0) | (g[:, B_M2] > 0)
        varies |= seen & (g[:, B_MEAN] != arrays["mean"][local])
        fresh = ~seen & ~varies  # first seen in my pushes: numeric once their means differ
        if fresh.any():
            order = np.lexsort((g[fresh, B_MEAN], at[fresh]))
            f_at, f_mean = at[fresh][order], g[fresh, B_MEAN][order]
            differ = (f_at[1:] == f_at[:-1]) & (f_mean[1:] != f_mean[:-1])
            varies[np.isin(at, f_at[1:][differ])] = True
        numeric = np.unique(at[varies])
        every = np.union1d(idx, numeric)  # one replay for both
        state = self._replayed(every, at, g)
        w = self.optimizer.weights(state, np.searchsorted(every, idx))
        if not numeric.size:
            return w, 0.0
        pos = np.searchsorted(every, numeric)
        before = {k: arrays[k][numeric - self.dr.lo] for k in self.optimizer.state_names}
        after = {k: v[pos] for k, v in state.items()}
        return w, float(self.optimizer.offsets(after).sum() - self.optimizer.offsets(before).sum())

    def _pushes(self) -> list:
        """My unreflected pushes in order; a standardized rule's with the running row count
        the shard will have when it applies each (its count plus my pushes up to it)."""
        if not self.centring:
            return [p for shard in sorted(self.own) for p in self.own[shard]]
        out = []
        for shard in sorted(self.own):
            rows = self.rows.get(shard, 0)
            for clock, idx, g in self.own[shard]:
                rows += g[0, ROWS] if g.size else 0
                g = g.copy()
                g[:, ROWS] = rows
                out.append((clock, idx, g))
        return out

    def _replayed(self, idx: np.ndarray, all_idx=None, all_g=None) -> dict:
        """The state at sorted unique ``idx`` with my unreflected pushes applied (``all_idx``,
        ``all_g``: their entries, concatenated in order, if the caller has them)."""
        local = idx - self.dr.lo
        state = {k: self.dr.arrays[k][local] for k in self.optimizer.state_names}
        if all_idx is None:
            pushes = self._pushes()
            if pushes:
                all_idx = np.concatenate([p[1] for p in pushes])
                all_g = np.concatenate([p[2] for p in pushes])
        if all_idx is not None and idx.size:
            # every unreflected push at once: its entries that fall on ``idx``, in push order
            # (clock order per shard; shards hold disjoint ranges)
            pos = np.minimum(np.searchsorted(idx, all_idx), idx.size - 1)
            hit = idx[pos] == all_idx
            at, g = pos[hit], all_g[hit]
            # the k-th push touching a coordinate is applied in round k, so each coordinate
            # sees its pushes in order, as applying push by push would (the update rule is
            # per coordinate), with one call per round instead of one per push
            for sel in _rounds(at):
                self.optimizer.apply(state, at[sel], g[sel])
        return state

    def warm(self, w: np.ndarray) -> None:
        """Start from dense weights ``w`` with no history, as the shards' ``warm`` does."""
        hi = min(w.size, self.dr.lo + next(iter(self.dr.arrays.values())).size)
        nz = np.flatnonzero(w[self.dr.lo : hi]) + self.dr.lo
        if nz.size:
            self.optimizer.warm(self.dr.arrays, nz - self.dr.lo, w[nz])
            self.dr.mark(nz)


def _rounds(at: np.ndarray) -> list[np.ndarray]:
    """Positions of ``at`` grouped by occurrence: round k holds each value's k-th occurrence.

    >>> [r.tolist() for r in _rounds(np.array([5, 3, 5, 5, 3]))]
    [[0, 1], [2, 4], [3]]
    """
    if not at.size:
        return []
    order = np.argsort(at, kind="stable")
    sorted_at = at[order]
    starts = np.flatnonzero(np.r_[True, sorted_at[1:] != sorted_at[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, at.size]))
    rank = np.empty(at.size, np.int64)
    rank[order] = np.arange(at.size) - run_start
    by_rank = np.argsort(rank, kind="stable")
    cuts = np.searchsorted(rank[by_rank], np.arange(1, rank.max() + 1))
    return np.split(by_rank, cuts)


def state_digest(arrays: dict, fields: dict) -> str:
    """SHA-256 of an operator's logical state: named numpy arrays (by bytes, dtype and shape)
    and plain fields (canonical JSON; sets become sorted lists, dict keys strings).

    How it is stored (blocks, journal length) is left out, so a state rebuilt from a
    savepoint in another process, at another parallelism, hashes the same.

    Examples
    --------
    >>> a = state_digest({"w": np.arange(3.0)}, {"clock": {"t#0": 2}, "seen": {3, 1}})
    >>> a == state_digest({"w": np.arange(3.0)}, {"seen": {1, 3}, "clock": {"t#0": 2}})
    True
    >>> a == state_digest({"w": np.arange(3.0) + 1e-12}, {"clock": {"t#0": 2}, "seen": {1, 3}})
    False
    """

    def plain(value):
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (set, frozenset)):
            return sorted(plain(v) for v in value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, np.ndarray):
            return state_digest({"a": value}, {})
        if isinstance(value, np.generic):
            return value.item()
        return value

    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    h.update(json.dumps(plain(fields), sort_keys=True).encode())
    return h.hexdigest()
