"""The server-side function of one parameter-server shard: apply a push to the optimizer's
state of its coordinates and return what changed (Li et al., OSDI 2014). Pure numpy; the
Flink adapter is ``operators/shard_fn.py``."""

from __future__ import annotations

import math
from collections.abc import MutableMapping

import numpy as np

from operators.dense_range import DenseRange
from operators.drift import DRIFT_BOOST
from operators.ps import BLOCK


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

    def act_dense(self, dr: DenseRange, action: str) -> tuple[np.ndarray, np.ndarray]:
        """A drift action on the whole range of a working copy (``--on-drift``): ``reset``
        starts every coordinate's state from zero, ``boost`` raises the step sizes
        ``DRIFT_BOOST`` times (``optimizer.boost``). Returns every coordinate it held, with
        its new weight: the update that carries them, and their state, to the replicas."""
        names = self.optimizer.state_names
        empty = self.optimizer.init_state(1)
        held = dr.arrays["sent"] != 0
        for k in names:  # (a never-written coordinate of a zero-filled array holds 0)
            held |= (dr.arrays[k] != empty[k][0]) & (dr.arrays[k] != 0)
        local = np.flatnonzero(held)
        part = {k: dr.arrays[k][local] for k in names}
        if action == "reset":
            part = self.optimizer.init_state(local.size)
        else:
            self.optimizer.boost(part, DRIFT_BOOST)
        for k in names:
            dr.arrays[k][local] = part[k]
        w = self.optimizer.weights(dr.arrays, local)
        dr.arrays["sent"][local] = w
        self.load_offset(dr)
        idx = local + dr.lo
        if idx.size:
            dr.mark(idx)
        return idx, w

    def replay(self, dr: DenseRange, entry: tuple) -> None:
        """Replay one journal entry: a push ``(idx, g)`` or a drift action ``(action,)``."""
        if len(entry) == 1:
            self.act_dense(dr, entry[0])
        else:
            self.apply_dense(dr, *entry)

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
