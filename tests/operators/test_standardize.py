"""Online standardization and the mini-batch warm-up: the pure pieces, no Flink."""

import numpy as np
import pytest

from connectors.messages import ModelUpdate, decode_update
from operators.dense_range import DenseRange
from operators.logistic import batch_gradient, batch_scores, prepare, standardized_push
from operators.optim import Ftrl, Standardized, merge_moments, scaling
from operators.ps import batch_size_at, plan_batches
from operators.serving import Following
from operators.shard_server import ShardServer
from operators.snapshot import Snapshot, from_updates, load, save


def _batch(rng, rows=20, bits=6):
    """A CSR mini-batch: a numeric coordinate 3 (mean 50), a sometimes-present numeric 9 and
    a one-hot coordinate 5 (always 1)."""
    idx, val, indptr = [], [], [0]
    for _ in range(rows):
        row = {3: rng.normal(50, 10), 5: 1.0}
        if rng.random() < 0.5:
            row[9] = rng.normal(-2, 1)
        for k in sorted(row):
            idx.append(k)
            val.append(row[k])
        indptr.append(len(idx))
    return prepare(np.array(indptr), np.array(idx), np.array(val), bits)


def test_warmup_grows_by_an_eighth_to_the_batch_size_and_off_is_constant():
    sizes = [batch_size_at(c, 50) for c in range(40)]
    assert sizes[:8] == [1, 1, 1, 1, 1, 1, 2, 2] and sizes[33:] == [48, 50, 50, 50, 50, 50, 50]
    assert sizes == sorted(sizes)  # never shrinks
    assert all(b <= a * 1.125 + 1 for a, b in zip(sizes[:-1], sizes[1:], strict=True))  # by 1/8
    assert batch_size_at(10**9, 50) == 50  # no giant power for a long-lived worker
    assert [batch_size_at(c, 50, warmup=False) for c in range(3)] == [50, 50, 50]


def test_plan_batches_waits_for_a_full_batch_unless_flushed_and_obeys_consistency():
    always = lambda clock: True  # noqa: E731
    assert plan_batches(0, 0, 100, True, always, flush=True) == []
    assert plan_batches(2, 6, 100, True, always, flush=False) == [2]  # batch 6 holds 2
    assert plan_batches(3, 6, 100, True, always, flush=False) == [2]  # batch 7 wants 2 more
    assert plan_batches(3, 6, 100, True, always, flush=True) == [2, 1]
    assert plan_batches(250, 50, 100, True, always, flush=False) == [100, 100]
    assert plan_batches(250, 50, 100, True, lambda c: c < 51, flush=True) == [100]
    assert plan_batches(250, 50, 100, True, lambda c: False, flush=True) == []


def test_moments_merge_like_numpy_over_the_concatenation():
    rng = np.random.default_rng(1)
    a, b = rng.normal(3, 2, 17), rng.normal(-1, 5, 6)
    c, m, m2 = merge_moments(a.size, a.mean(), a.var() * a.size, b.size, b.mean(), b.var() * b.size)
    both = np.append(a, b)
    assert c == both.size and np.isclose(m, both.mean()) and np.isclose(m2 / c, both.var())


def test_constants_are_divided_by_their_magnitude_and_warm_starts_stay_unscaled():
    count = np.array([10.0, 10.0, -1.0, 0.0, 3.0])
    mean = np.array([1.0, 4.0, 7.0, 0.0, -2.5])
    m2 = np.array([0.0, 90.0, 50.0, 0.0, 0.0])  # coordinate 1: values vary; 2: a warm start
    center, scale = scaling(count, mean, m2, rows=20)
    assert center.tolist()[0::2] == [0.0, 0.0, 0.0] and scale.tolist()[0::2] == [1.0, 1.0, 2.5]
    # coordinate 1 over 20 rows, present in 10 (mean 4, variance 9), 0 in the others
    assert center[1] == 2.0 and np.isclose(scale[1] ** 2, (90 + 10 * 16) / 20 - 4)
    assert scale[3] == 1.0 and center[3] == 0.0  # never seen


def test_a_shard_keeps_its_centring_sum_exact_and_a_reload_recomputes_it():
    rng = np.random.default_rng(2)
    rule = Standardized(Ftrl(alpha=0.2))
    server = ShardServer(rule)
    dr = DenseRange((*rule.state_names, "sent"), 0, 65, block=16)
    rows = 0
    for _ in range(30):
        batch = _batch(rng)
        scores = batch_scores(batch, dr.arrays["sent"][batch.coords], -dr.offset)
        push = standardized_push(batch, batch_gradient(batch, rng.random(batch.size) < 0.3, scores))
        rows = push[-1, 0] = rows + batch.size
        assert server.apply_dense(dr, batch.coords, push) is not None
    exact = rule.offsets(dr.arrays).sum()
    assert exact != 0 and np.isclose(dr.offset, exact, rtol=1e-12)
    again = DenseRange(dr.arrays.keys(), 0, 65, block=16)
    for name, arr in dr.arrays.items():
        again.arrays[name][:] = arr
    assert server.load_offset(again).offset == pytest.approx(dr.offset, rel=1e-12)
    # the numeric coordinate 3 is centred near its mean, the one-hot 5 is left alone
    assert 40 < dr.arrays["center"][3] < 60 and dr.arrays["scale"][5] in (0.0, 1.0)


def test_the_sync_sum_of_two_pushes_merges_their_moments():
    rng = np.random.default_rng(3)
    a, b = _batch(rng, rows=7), _batch(rng, rows=11)
    ga = standardized_push(a, rng.normal(size=a.coords.size))
    gb = standardized_push(b, rng.normal(size=b.coords.size))
    uniq, both = Standardized(Ftrl()).combine([(a.coords, ga), (b.coords, gb)])
    # one mini-batch of all 18 rows has the same moments
    rows = np.concatenate([a.rows, b.rows + a.size])
    whole = prepare(np.append(0, np.cumsum(np.bincount(rows, minlength=18))),
                    np.concatenate([a.coords[a.inverse], b.coords[b.inverse]]),
                    np.concatenate([a.values, b.values]), 6)  # fmt: skip
    expected = standardized_push(whole, np.zeros(whole.coords.size))
    assert uniq.tolist() == whole.coords.tolist()
    np.testing.assert_allclose(both[:-1, 1:], expected[:-1, 1:], rtol=1e-12)
    assert both[-1, 0] == 18 and both[-1, 1] == ga[-1, 1] + gb[-1, 1]
    np.testing.assert_allclose(
        both[:-1, 0],
        np.bincount(
            np.searchsorted(uniq, np.append(a.coords, b.coords)), np.append(ga[:-1, 0], gb[:-1, 0])
        ),
    )


def test_offsets_travel_in_updates_fold_into_snapshots_and_unfold_for_serving(tmp_path):
    update = ModelUpdate("r", "t", 1, 3, {}, np.array([3]), np.array([0.5]), offset=-0.25)
    assert decode_update(update.to_json()).offset == -0.25
    with pytest.raises(Exception, match="offset"):
        decode_update('{"run": "r", "task": "t", "shard": 0, "version": 1, "offset": "x"}')
    updates = [update, ModelUpdate("r", "t", 0, 2, {}, np.array([16]), np.array([1.0]),
                                   offset=0.75)]  # fmt: skip
    (snap,) = from_updates(updates, bits=4)
    assert snap.weights[16] == 1.0 - 0.5 and snap.offsets == {0: 0.75, 1: -0.25}
    loaded = load(save(snap, tmp_path))
    assert loaded.offsets == snap.offsets and loaded.unfolded()[16] == 1.0
    follow = Following.start(snapshot=loaded)
    assert follow.margin_offset == -0.5
    follow.applied("r", 0, 3, 10, offset=0.25)
    assert follow.margin_offset == 0.0
    follow.switched("r2")
    assert follow.offsets == {}
    # a plain (unstandardized) snapshot: nothing to fold
    plain = Snapshot("t", 4, 1, np.zeros(17))
    assert plain.unfolded().tolist() == plain.weights.tolist()


@pytest.mark.parametrize("lag", [0, 1, 5])
def test_read_my_writes_one_worker_sees_the_shards_weights_and_centring_whatever_the_lag(lag):
    """One worker, four shards, standardized, updates held back ``lag`` pushes: its replica
    plus its own unreflected (self-contained) pushes scores as the shards' state does."""
    from operators.logistic import dimension
    from operators.ps import shard_width, split_by_shard
    from operators.replica import StateReplica

    bits, shards = 6, 4
    dim, width = dimension(bits), shard_width(dimension(6), 4)
    rule = Standardized(Ftrl(alpha=0.2))
    server = ShardServer(rule, state_updates=True)
    ranges = [DenseRange((*rule.state_names, "sent"), s * width, (s + 1) * width, 16)
              for s in range(shards)]  # fmt: skip
    rep = StateReplica(rule, DenseRange(rule.state_names, 0, dim, block=16))
    rng = np.random.default_rng(4)
    in_flight, received, rows = [], {}, 0
    for clock in range(30):
        batch = _batch(rng, rows=int(rng.integers(1, 12)))
        expected_w = np.concatenate([rule.weights(r.arrays, batch.coords[
            (batch.coords >= r.lo) & (batch.coords < r.lo + r.arrays["z"].size)] - r.lo)
            for r in ranges])  # fmt: skip
        w, mine = rep.lookup_centred(batch.coords)
        np.testing.assert_array_equal(w, expected_w)
        assert np.isclose(sum(received.values()) + mine, sum(r.offset for r in ranges),
                          rtol=1e-9, atol=1e-12)  # fmt: skip
        g = standardized_push(batch, rng.normal(size=batch.coords.size))
        rows += batch.size
        for shard, part_idx, part_g in split_by_shard(batch.coords, g, dim, shards):
            if part_idx.size:
                rep.push(shard, clock, part_idx, rule.self_contained(part_g))
            applied = part_g.copy()
            applied[-1, 0] = rows
            changed, _ = server.apply_dense(ranges[shard], part_idx, applied)
            local = changed - ranges[shard].lo
            state = {k: ranges[shard].arrays[k][local].copy() for k in rule.state_names}
            in_flight.append((shard, clock, changed, state, ranges[shard].offset, rows))
        while len(in_flight) > lag * shards:
            shard, mine_clock, changed, state, offset, counted = in_flight.pop(0)
            rep.update(shard, mine_clock, changed, state, counted)
            received[shard] = offset


def test_the_sync_sum_of_empty_pushes_is_an_empty_push():
    empty = (np.zeros(0, np.int64), np.zeros((1, 4)))
    uniq, both = Standardized(Ftrl()).combine([empty, empty])
    assert uniq.size == 0 and both.tolist() == [[0.0, 0.0, 0.0, 0.0]]
