"""Cost of a read-my-writes lookup as the pushes in flight grow.

``python benchmarks/lookup_bench.py``: a replica of 2^20 FTRL coordinates, 4 shards, LAG
unreflected pushes per shard (250 random coordinates each plus 50 that every push touches, as
frequent features do), one lookup of about 950 coordinates (a mini-batch's). Compares
``StateReplica.lookup`` (one update-rule call per round of pushes) with the push-by-push
loop it replaced, and checks they agree bit for bit.
"""

from __future__ import annotations

import timeit
from functools import partial

import numpy as np

from operators.dense_range import DenseRange
from operators.optim import make_optimizer
from operators.replica import StateReplica

DIM, SHARDS = 1 << 20, 4


def push_by_push(rep: StateReplica, idx: np.ndarray) -> np.ndarray:
    """The lookup as it was: one intersect and one update-rule call per push."""
    state = {k: rep.dr.arrays[k][idx - rep.dr.lo] for k in rep.optimizer.state_names}
    for shard in sorted(rep.own):
        for _, pidx, pg in rep.own[shard]:
            _, at, pos = np.intersect1d(idx, pidx, assume_unique=True, return_indices=True)
            if at.size:
                rep.optimizer.apply(state, at, pg[pos])
    return rep.optimizer.weights(state, np.arange(idx.size))


def main() -> None:
    rng = np.random.default_rng(0)
    opt = make_optimizer("ftrl", alpha=0.05, beta=1.0, l1=0.0, l2=0.0)
    common = rng.choice(DIM, 50, replace=False)
    width = DIM // SHARDS
    print(f"numpy {np.__version__}; lookup of a mini-batch's coordinates, FTRL, {SHARDS} shards")
    for lag in (5, 20, 100):
        rep = StateReplica(opt, DenseRange(opt.state_names, 0, DIM, 4096))
        for clock in range(lag):
            for shard in range(SHARDS):
                lo, hi = shard * width, (shard + 1) * width
                mine = common[(common >= lo) & (common < hi)]
                pidx = np.unique(np.r_[rng.integers(lo, hi, 250), mine])
                rep.push(shard, clock, pidx, rng.normal(size=pidx.size))
        idx = np.unique(np.r_[rng.integers(0, DIM, 900), common])
        assert np.array_equal(push_by_push(rep, idx), rep.lookup(idx))
        old = timeit.timeit(partial(push_by_push, rep, idx), number=50) / 50 * 1e3
        new = timeit.timeit(partial(rep.lookup, idx), number=50) / 50 * 1e3
        print(
            f"{lag:>4} pushes in flight per shard: push by push {old:6.2f} ms, "
            f"in rounds {new:6.2f} ms (ratio {old / new:.1f}); equal bit for bit"
        )


if __name__ == "__main__":
    main()
