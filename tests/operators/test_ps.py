import numpy as np
import pytest

from connectors.messages import ModelUpdate, decode_update
from operators.dense_range import DenseRange
from operators.local import OnlineLogistic
from operators.logistic import dimension, gradient, predict_proba
from operators.optim import Ftrl
from operators.ps import BLOCK, Consistency, split_by_shard
from operators.replica import Replica, StateReplica
from operators.shard_server import ShardServer


def test_split_by_shard_covers_every_shard_in_contiguous_ranges():
    dim, shards = dimension(10), 4
    idx = np.array([0, 5, 256, 300, 700, 1024])
    g = np.arange(idx.size, dtype=float)
    parts = split_by_shard(idx, g, dim, shards)
    assert [s for s, _, _ in parts] == [0, 1, 2, 3]
    assert np.concatenate([p for _, p, _ in parts]).tolist() == idx.tolist()
    width = -(-dim // shards)
    for s, part, _ in parts:
        assert np.all(part // width == s)


def test_shard_server_equals_the_optimizer_on_dense_state_across_blocks():
    opt = Ftrl(alpha=0.1, l1=0.01)
    server = ShardServer(Ftrl(alpha=0.1, l1=0.01))
    blocks: dict = {}
    dense = opt.init_state(3 * BLOCK)
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = np.unique(rng.integers(0, 3 * BLOCK, 40))
        g = rng.normal(0, 1, idx.size)
        changed, w = server.apply(blocks, idx, g)
        expected = opt.apply(dense, idx, g)
        moved = expected != 0
        assert set(changed.tolist()) >= set(idx[moved].tolist())
        np.testing.assert_array_equal(w, opt.weights(dense, changed))


def test_non_finite_push_is_rejected_and_writes_nothing():
    server = ShardServer(Ftrl())
    blocks: dict = {}
    server.apply(blocks, np.array([1, 2]), np.array([0.5, 0.5]))
    before = {k: {n: a.copy() for n, a in v.items()} for k, v in blocks.items()}
    assert server.apply(blocks, np.array([1, 5000]), np.array([np.nan, 1.0])) is None
    assert server.apply(blocks, np.array([2]), np.array([1e308 * 10])) is None
    for bid, arrays in before.items():
        for name, array in arrays.items():
            np.testing.assert_array_equal(blocks[bid][name], array)
    assert 1 not in blocks  # the second block was never created


def test_update_threshold_sends_only_significant_moves():
    loose, strict = ShardServer(Ftrl(alpha=0.1)), ShardServer(Ftrl(alpha=0.1), threshold=0.05)
    b1, b2 = {}, {}
    rng = np.random.default_rng(1)
    sent_loose = sent_strict = 0
    for _ in range(200):
        idx = np.unique(rng.integers(0, 100, 10))
        g = rng.normal(0, 0.1, idx.size)
        sent_loose += loose.apply(b1, idx, g)[0].size
        sent_strict += strict.apply(b2, idx, g)[0].size
    assert sent_strict < sent_loose / 2
    # what a replica holds is never further than the threshold from the truth
    replica = Replica()
    strict2 = ShardServer(Ftrl(alpha=0.1), threshold=0.05)
    b3: dict = {}
    truth = Ftrl(alpha=0.1)
    dense = truth.init_state(100)
    for _ in range(200):
        idx = np.unique(rng.integers(0, 100, 10))
        g = rng.normal(0, 0.1, idx.size)
        replica.assign(*strict2.apply(b3, idx, g))
        truth.apply(dense, idx, g)
    gap = np.abs(replica.lookup(np.arange(100)) - truth.weights(dense, np.arange(100)))
    assert gap.max() <= 0.05


def test_replica_lookup_and_dense():
    replica = Replica()
    replica.assign(np.array([3, BLOCK + 1]), np.array([0.5, -1.0]))
    assert replica.lookup(np.array([0, 3, BLOCK + 1, 5 * BLOCK])).tolist() == [0, 0.5, -1.0, 0]
    dense = replica.dense(2 * BLOCK)
    assert dense[3] == 0.5 and dense[BLOCK + 1] == -1.0 and dense.sum() == -0.5


@pytest.mark.parametrize(
    "text,clock,applied,ok",
    [
        ("async", 100, [-1, -1], True),
        ("sync", 0, [-1, -1], True),
        ("sync", 1, [0, -1], False),
        ("sync", 1, [0, 0], True),
        ("bounded:0", 3, [2, 2], True),
        ("bounded:0", 3, [1, 2], False),
        ("bounded:2", 5, [2, 4], True),
        ("bounded:2", 5, [1, 4], False),
    ],
)
def test_consistency_rule(text, clock, applied, ok):
    assert Consistency.parse(text).may_start(clock, applied) is ok


@pytest.mark.parametrize(
    "text, clock, applied, ok",
    [
        ("async", 63, [-1, -1], True),  # 63 in flight: may start the 64th
        ("async", 64, [-1, 5], False),  # 64 in flight (the first shard has applied none)
        ("async", 70, [6, 9], True),
        ("bounded:2", 64, [61, 61], True),  # the bound decides when it is the tighter one
        ("bounded:100", 64, [-1, -1], False),  # flow control when it is the tighter one
        ("sync", 64, [63, 63], True),
    ],
)
def test_flow_control_caps_mini_batches_in_flight(text, clock, applied, ok):
    assert Consistency.parse(text, max_in_flight=64).may_start(clock, applied) is ok


def test_consistency_parse_errors():
    for bad in ("bounded", "bounded:-1", "eventual", "bounded:x"):
        with pytest.raises(ValueError, match="consistency must be"):
            Consistency.parse(bad)


def test_gradient_is_the_summed_log_loss_gradient():
    bits = 4
    indptr = np.array([0, 2, 3])
    indices = np.array([1, 3, 1])
    values = np.array([1.0, 2.0, -1.0])
    labels = np.array([1.0, 0.0])
    w = {1: 0.3, 3: -0.2, 16: 0.1}
    scores = predict_proba(indptr, indices, values, lambda i: np.array([w[j] for j in i]), bits)
    z0, z1 = 0.3 * 1 + -0.2 * 2 + 0.1, 0.3 * -1 + 0.1
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-np.array([z0, z1]))))
    idx, g = gradient(indptr, indices, values, labels, scores, bits)
    r = scores - labels
    assert idx.tolist() == [1, 3, 16]
    np.testing.assert_allclose(g, [r[0] * 1 + r[1] * -1, r[0] * 2, r[0] + r[1]])


def test_local_learner_learns_the_synthetic_stream():
    from connectors.hashing import hash_batch
    from operators.metrics import roc_auc
    from operators.synthetic import CtrSettings, CtrStream

    model = OnlineLogistic(bits=18, alpha=0.1)
    scores, labels = [], []
    for docs, _, y in CtrStream(CtrSettings(events=30_000, seed=2)).chunks():
        for lo in range(0, len(docs), 100):
            batch = docs[lo : lo + 100]
            indptr, indices, values = hash_batch([d["features"] for d in batch], 18)
            scores.append(model.learn_many(indptr, indices, values, y[lo : lo + 100]))
            labels.append(y[lo : lo + 100])
    s, y = np.concatenate(scores), np.concatenate(labels)
    assert roc_auc(y[-10_000:], s[-10_000:]) > roc_auc(y[:10_000], s[:10_000]) + 0.02
    assert roc_auc(y[-10_000:], s[-10_000:]) > 0.7
    assert np.all(np.isfinite(model.weights_)) and model.version_ == 300


def test_state_digest_sees_the_state_not_its_storage():
    from operators.dense_range import DenseRange
    from operators.ps import state_digest

    rng = np.random.default_rng(4)
    idx = np.sort(rng.choice(5000, 300, replace=False))
    vals = rng.normal(size=300)
    one = DenseRange(("w",), 0, 5000, block=64)
    one.assign(idx, vals)
    # the same weights, rebuilt from stored blocks as a restore does
    two = DenseRange(("w",), 0, 5000, block=64)
    for bid, block in one.take_touched().items():
        two.load(bid, block)
    meta = {"clock": {"t#0": 3, "t#1": 2}, "shards": {0: (4, 3)}}
    assert state_digest(one.arrays, meta) == state_digest(two.arrays, dict(reversed(meta.items())))
    two.assign(idx[:1], vals[:1] + 1e-15)
    assert state_digest(one.arrays, meta) != state_digest(two.arrays, meta)
    assert state_digest(one.arrays, meta) != state_digest(one.arrays, {**meta, "clock": {}})


@pytest.mark.parametrize("lag", [0, 1, 5])
def test_read_my_writes_one_worker_sees_exactly_the_shards_weights_whatever_the_lag(lag):
    """One worker, four shards, updates held back ``lag`` pushes: its replica plus its own
    unreflected pushes is the shards' state, bit for bit; a plain weights replica is not."""
    bits, shards = 8, 4
    dim = dimension(bits)
    opt = Ftrl(alpha=0.1, l1=1.0)  # L1 keeps many weights at 0 while z and n move
    server = ShardServer(opt, state_updates=True)
    dense = DenseRange(("z", "n", "sent"), 0, dim, block=64)
    rep = StateReplica(opt, DenseRange(opt.state_names, 0, dim, block=64))
    plain = Replica(block=64)
    rng = np.random.default_rng(3)
    in_flight, differed = [], False
    for clock in range(40):
        idx = np.unique(np.append(rng.integers(0, dim - 1, 30), dim - 1))
        expected = opt.weights(dense.arrays, idx)
        np.testing.assert_array_equal(rep.lookup(idx), expected)
        differed |= not np.array_equal(plain.lookup(idx), expected)
        g = rng.normal(0, 1, idx.size)
        for shard, part_idx, part_g in split_by_shard(idx, g, dim, shards):
            rep.push(shard, clock, part_idx, part_g)
            changed, w = server.apply_dense(dense, part_idx, part_g)
            state = {k: dense.arrays[k][changed].copy() for k in opt.state_names}
            in_flight.append((shard, clock, changed, w, state))
        while len(in_flight) > lag * shards:
            shard, mine, changed, w, state = in_flight.pop(0)
            rep.update(shard, mine, changed, state)
            plain.assign(changed, w)
    assert differed == (lag > 0)
    assert sum(len(v) for v in rep.own.values()) == len(in_flight)  # the rest are forgotten


def test_read_my_writes_skips_a_non_finite_push_and_an_update_reflecting_nothing_of_mine():
    opt = Ftrl()
    rep = StateReplica(opt, DenseRange(opt.state_names, 0, 8, block=4))
    rep.push(0, 0, np.array([1]), np.array([np.nan]))
    assert rep.own == {}
    rep.push(0, 1, np.array([2]), np.array([1.0]))
    rep.update(0, 0, np.array([5]), {"z": np.array([2.0]), "n": np.array([4.0])})
    assert [c for c, _, _ in rep.own[0]] == [1]
    assert rep.lookup(np.array([2]))[0] < 0
    np.testing.assert_array_equal(
        rep.lookup(np.array([5])),
        opt.weights({"z": np.array([2.0]), "n": np.array([4.0])}, np.array([0])),
    )


def test_model_update_carries_the_optimizer_state_exactly():
    state = {"z": np.array([0.1, -1 / 3]), "n": np.array([2.0, 1e-300])}
    update = ModelUpdate("r", "ctr", 1, 3, {"ctr#0": 2}, np.array([7, 9]), np.array([0.5, 0.25]),
                         state=state)  # fmt: skip
    back = decode_update(update.to_json())
    assert {k: v.tolist() for k, v in back.state.items()} == {
        k: v.tolist() for k, v in state.items()
    }
    assert decode_update(ModelUpdate("r", "ctr", 1, 3, {}, update.indices, update.values)
                         .to_json()).state is None  # fmt: skip


def test_the_binary_update_decodes_to_what_the_json_one_does():
    state = {"z": np.array([0.1, -1 / 3]), "n": np.array([2.0, 1e-300])}
    full = ModelUpdate("r-1", "ctr", 1, 3, {"ctr#0": 2, "ctr#1": -1}, np.array([7, 2**30]),
                       np.array([0.5, -0.25]), applied=[["ctr#0", 2]], rejected=1, ts=17,
                       pushes_applied=9, duplicates_skipped=2, waiting=4, state=state,
                       offset=-0.125, rows=40, bits=30)  # fmt: skip
    bare = ModelUpdate("r", "ctr", 0, 1, {}, np.zeros(0, np.int64), np.zeros(0))
    for update in (full, bare):
        raw = update.to_bytes()
        assert len(raw) < len(update.to_json().encode())
        one, two = decode_update(raw), decode_update(update.to_json())
        assert one.to_json() == two.to_json()
        assert one.indices.dtype == np.int64 and one.indices.tolist() == update.indices.tolist()
