"""A worker's copy of the model: the weights as the update stream brings them (``Replica``),
or the shards' optimizer state with the worker's own pushes not yet reflected applied on top
(``StateReplica``, read-my-writes). Pure numpy."""

from __future__ import annotations

from collections.abc import MutableMapping

import numpy as np

from operators.dense_range import DenseRange
from operators.optim import B_M2, B_MEAN, ROWS
from operators.ps import BLOCK


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
