"""A dense working copy of arrays that Flink state stores in blocks: what a shard, a replica
and the local engine compute on, and what a checkpoint writes back block by block."""

from __future__ import annotations

import numpy as np

from operators.ps import BLOCK

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
