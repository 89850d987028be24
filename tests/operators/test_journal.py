"""The dense working copy + journal: the same arithmetic as the block store, and a rebuild
from compacted blocks + journal gives back exactly what the working copy held."""

import numpy as np
import pytest

from operators.dense_range import DenseRange
from operators.journal import Journaled, WorkingCopies
from operators.optim import make_optimizer
from operators.shard_server import ShardServer

LO, HI, BLOCK = 1000, 3000, 64  # a shard's range, not block-aligned


def pushes(seed=3, count=23):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        idx = np.unique(rng.integers(LO, HI, 40))
        yield idx, rng.normal(size=idx.size) * 2


@pytest.mark.parametrize("name", ["ftrl", "adagrad", "sgd"])
def test_dense_apply_equals_the_block_apply_bit_for_bit(name):
    server = ShardServer(make_optimizer(name, alpha=0.1, lr=0.1), threshold=0.01, block=BLOCK)
    blocks: dict = {}
    names = (*server.optimizer.state_names, "sent")
    dr = DenseRange(names, LO, HI, BLOCK)
    for idx, g in pushes():
        a, b = server.apply(blocks, idx, g), server.apply_dense(dr, idx, g)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert sorted(dr.take_touched()) == sorted(blocks)
    for bid, arrays in blocks.items():
        start = bid * BLOCK - dr.lo
        for k in names:
            assert np.array_equal(dr.arrays[k][start : start + BLOCK], arrays[k])


def test_a_non_finite_push_writes_nothing_to_the_dense_copy():
    server = ShardServer(make_optimizer("ftrl"), block=BLOCK)
    dr = DenseRange(("z", "n", "sent"), LO, HI, BLOCK)
    assert server.apply_dense(dr, np.array([LO + 1]), np.array([np.inf])) is None
    assert not dr.touched and not dr.arrays["z"].any()


def test_rebuild_from_compacted_blocks_and_journal_equals_the_working_copy():
    server = ShardServer(make_optimizer("ftrl", alpha=0.1), threshold=0.01, block=BLOCK)
    names = (*server.optimizer.state_names, "sent")
    state: dict = {}  # what Flink state would hold: compacted blocks ...
    journal: list = []  # ... and the pushes since

    def build():
        dr = DenseRange(names, LO, HI, BLOCK)
        for bid, value in state.items():
            dr.load(bid, value)
        return dr

    def replay(dr, entry):
        return server.apply_dense(dr, *entry)

    copies = WorkingCopies(compact_every=5)
    stamp = 0
    for push in pushes():
        work = copies.get("k", stamp, build, lambda: list(journal), replay)
        server.apply_dense(work.copy, *push)
        journal.append(push)
        stamp += 1
        work.stamp = stamp
        if len(journal) >= copies.compact_every:
            state.update(work.copy.take_touched())
            journal.clear()
    held = copies.current("k").copy.arrays

    fresh = WorkingCopies(compact_every=5)  # a new operator instance after a restart
    rebuilt = fresh.get("k", stamp, build, lambda: list(journal), replay).copy.arrays
    assert len(journal) == 3
    for k in names:
        assert np.array_equal(rebuilt[k], held[k])


def test_a_stale_stamp_rebuilds_and_a_current_one_does_not():
    copies = WorkingCopies()
    built = []

    def build():
        built.append(1)
        return DenseRange(("w",), 0, 8, 4)

    copies.get("k", 0, build, list, None)
    copies.get("k", 0, build, list, None)
    assert len(built) == 1
    copies.get("k", 7, build, list, None)  # state moved on (or was restored): rebuild
    assert len(built) == 2


def test_an_idle_copy_is_dropped_and_rebuilt_from_state_when_asked_for_again():
    now = [0.0]
    copies = WorkingCopies(idle_s=600, clock=lambda: now[0])
    built = []

    def build():
        built.append(1)
        return DenseRange(("w",), 0, 8, 4)

    copies.get("quiet", 3, build, list, None)
    now[0] = 400  # a sweep (every idle_s / 2): nothing idle long enough
    copies.get("busy", 3, build, list, None)
    now[0] = 750  # the next sweep: "quiet" idle 750 s, "busy" 350 s: only "quiet" goes
    copies.get("busy", 3, build, list, None)
    assert "quiet" not in copies and "busy" in copies and len(built) == 2
    copies.get("quiet", 3, build, list, None)  # same stamp, but gone: rebuilt
    assert "quiet" in copies and len(built) == 3


@pytest.mark.parametrize("names", [("w",), ("z", "n", "sent")])
def test_a_thin_block_is_stored_sparse_and_loads_back_exactly(names):
    rng = np.random.default_rng(7)
    dr = DenseRange(names, 0, 3 * 64, block=64)
    thin = np.array([3, 40])  # block 0: 2 of 64 coordinates
    thick = np.arange(64, 64 + 60)  # block 1: 60 of 64
    for name in names:
        dr.arrays[name][thin] = rng.normal(size=thin.size)
        dr.arrays[name][thick] = rng.normal(size=thick.size)
    dr.arrays[names[-1]][thick[::8]] = 0.0  # present through the other arrays, or absent
    dr.mark(np.concatenate([thin, thick, [130]]))  # block 2 touched, all zero again
    stored = dr.take_touched()
    assert isinstance(stored[0], tuple) and stored[0][0].tolist() == [3, 40]
    assert isinstance(stored[2], tuple) and stored[2][0].size == 0
    assert not isinstance(stored[1], tuple)
    back = DenseRange(names, 0, 3 * 64, block=64)
    for arr in back.arrays.values():
        arr[:] = 9.0  # a load replaces the whole block, zeros included
    for bid, value in stored.items():
        back.load(bid, value)
    for name in names:
        assert np.array_equal(back.arrays[name], dr.arrays[name])


class Entries(list):
    """The part of a ListState a journal uses."""

    add, clear = list.append, list.clear

    def get(self):
        return list(self)


def summing_journal(saved: dict, journal: Entries, every: int = 3) -> Journaled:
    """A journaled running sum: the copy is a one-element list, entries are addends."""
    return Journaled(
        journal,
        build=lambda key, meta: [saved.get(key, 0)],
        replay=lambda copy, x: copy.__setitem__(0, copy[0] + x),
        save=lambda work, meta: saved.__setitem__("k", work.copy[0]),
        compact_every=every,
    )


def test_journaled_compacts_every_n_entries_and_a_fresh_instance_rebuilds_the_same():
    saved, journal, meta = {}, Entries(), {}
    j = summing_journal(saved, journal)
    for x in (1, 2, 3, 4, 5):
        work = j.working("k", meta)
        work.copy[0] += x
        j.took(work, meta, x)
    assert saved == {"k": 6} and journal == [4, 5]
    assert meta == {"stamp": 5, "journal": 2}
    assert summing_journal(saved, journal).working("k", meta).copy == [15]


def test_an_operation_without_entry_moves_the_stamp_but_is_not_replayed():
    saved, journal, meta = {}, Entries(), {}
    j = summing_journal(saved, journal)
    work = j.working("k", meta)
    j.took(work, meta, None)  # say a push the update rule rejected: nothing changed
    assert meta == {"stamp": 1} and journal == []
    assert j.working("k", meta) is work  # the stamp is the cached copy's: no rebuild


def test_restart_forgets_the_journal_and_rebuilds_from_what_was_saved():
    saved, journal, meta = {"k": 100}, Entries(), {}
    j = summing_journal(saved, journal)
    work = j.working("k", meta)
    work.copy[0] += 7
    j.took(work, meta, 7)
    j.restart(meta)  # the caller replaced the saved state (serve switching runs)
    assert journal == [] and meta["stamp"] == 2
    assert j.working("k", meta).copy == [100]
