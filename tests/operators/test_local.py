"""The single-process learner: the same math as the minimal sparse FTRL of the benchmark's
ceiling, score for score, and the same state as a shard fed the same pushes."""

import numpy as np
import pytest

from benchmarks.ceiling import SparseFtrl
from connectors.errors import ConfigError
from connectors.hashing import hash_batch
from operators.local import OnlineLogistic
from operators.logistic import NOTHING_HELD, kkt_filter
from operators.optim import Ftrl
from operators.settings import ModelSettings
from operators.synthetic import CtrSettings, CtrStream

BITS = 16


def _batches(events: int, size: int, seed: int = 7):
    docs, labels = [], []
    for chunk, _, y in CtrStream(CtrSettings(events=events, seed=seed)).chunks():
        docs += [d["features"] for d in chunk]
        labels.append(y)
    y = np.concatenate(labels).astype(float)
    for lo in range(0, events, size):
        yield (*hash_batch(docs[lo : lo + size], BITS), y[lo : lo + size])


def test_scores_equal_the_minimal_sparse_ftrl_of_the_ceiling():
    ours = OnlineLogistic(BITS, standardize=False, alpha=0.1)
    ceiling = SparseFtrl(BITS, alpha=0.1)
    for batch in _batches(5_000, 50):
        np.testing.assert_allclose(ours.learn_many(*batch), ceiling.learn(*batch), rtol=1e-12)
    weights = -ceiling.z / ((1.0 + np.sqrt(ceiling.n)) / 0.1)
    np.testing.assert_allclose(ours.weights_, weights, rtol=1e-12, atol=1e-300)
    assert ours.version_ == 100 and ours.rejected_ == 0


def test_with_l1_the_soft_threshold_holds_small_weights_at_zero():
    ours = OnlineLogistic(BITS, standardize=False, l1=1.0)
    ceiling = SparseFtrl(BITS, l1=1.0)
    for batch in _batches(3_000, 100):
        np.testing.assert_allclose(ours.learn_many(*batch), ceiling.learn(*batch), rtol=1e-12)
    assert 0 < np.count_nonzero(ours.weights_) < np.count_nonzero(ceiling.n)


def test_a_non_finite_push_is_rejected_and_writes_nothing():
    model = OnlineLogistic(BITS)
    indptr, indices, values = np.array([0, 1]), np.array([3]), np.array([1e100])
    model.learn_many(indptr, indices, values, [1])  # its square still finite
    before = model.weights_.copy()
    model.learn_many(indptr, indices, np.array([np.inf]), [0])
    assert model.rejected_ == 1 and np.array_equal(model.weights_, before)


def test_the_update_rule_is_the_same_gathered_or_in_place():
    opt = Ftrl(alpha=0.2, l2=0.5)
    rng = np.random.default_rng(3)
    state = {"z": rng.normal(size=10), "n": rng.random(10)}
    idx, g = np.array([1, 4, 7]), rng.normal(size=3)
    new, w = opt.step({k: v[idx] for k, v in state.items()}, g)
    assert np.array_equal(opt.apply(state, idx, g), w)
    assert all(np.array_equal(state[k][idx], new[k]) for k in new)


def test_one_huge_feature_value_rejects_the_push_unless_clipped():
    from connectors.hashing import clip_values, hash_batch

    rows = [{"site": "a", "price": 1.0}] * 99 + [{"site": "b", "price": 1e200}]
    for clip, rejected in ((None, 1), (1e6, 0)):
        model = OnlineLogistic(8)
        indptr, indices, values = hash_batch(rows, 8)
        with np.errstate(over="ignore", invalid="ignore"):  # the unclipped push overflows
            model.learn_many(indptr, indices, clip_values(values, clip), [1] * 50 + [0] * 50)
        assert model.rejected_ == rejected
        assert np.isfinite(model.weights_).all()


def test_standardized_scores_equal_the_ceilings_standardized_ftrl():
    from benchmarks.ceiling import StandardizedSparseFtrl

    ours, ceiling = OnlineLogistic(BITS, alpha=0.2), StandardizedSparseFtrl(BITS, alpha=0.2)
    for batch in _batches(5_000, 50):
        np.testing.assert_allclose(ours.learn_many(*batch), ceiling.learn(*batch), rtol=1e-9)
    assert ours.shard_.offset != 0  # the numeric features were centred
    assert abs(ours.shard_.offset - ceiling.offset) <= 1e-9 * abs(ceiling.offset)


def test_the_kkt_filter_holds_back_only_what_l1_holds_at_zero_and_loses_no_gradient():
    rng = np.random.default_rng(5)
    held, total, pushed = NOTHING_HELD, np.zeros(33), np.zeros(33)
    for _ in range(200):
        coords = np.append(np.sort(rng.choice(32, size=8, replace=False)), 32)
        g = rng.normal(scale=0.6, size=coords.size)
        w = np.where(rng.random(coords.size) < 0.3, rng.normal(size=coords.size), 0.0)
        before = dict(zip(*held, strict=True))
        idx, sent, held = kkt_filter(coords, g, w, 1.0, held)
        total[coords] += g
        pushed[idx] += sent
        assert idx[-1] == 32  # the intercept always goes
        dropped = ~np.isin(coords, idx)
        with_held = g + np.array([before.get(c, 0.0) for c in coords])
        assert np.all(w[dropped] == 0) and np.all(np.abs(with_held[dropped]) <= 1.0)
        assert np.all(np.diff(held[0]) > 0)  # sorted, each coordinate once
    assert 0 < held[0].size < 32
    # every gradient was pushed or is still held
    np.testing.assert_allclose(pushed + np.bincount(held[0], held[1], 33), total, atol=1e-12)


def test_the_kkt_filter_halves_the_pushes_and_learns_as_well():
    from operators.metrics import summary

    def run(kkt):
        model, scores, labels = OnlineLogistic(BITS, standardize=False, l1=1.5, kkt=kkt), [], []
        for batch in _batches(30_000, 200, seed=2):
            scores.append(model.learn_many(*batch))
            labels.append(batch[-1])
        return model, summary(np.concatenate(labels), np.concatenate(scores))["auc"]

    (plain, plain_auc), (kkt, kkt_auc) = run(False), run(True)
    assert plain.pushed_ >= 2 * kkt.pushed_, (plain.pushed_, kkt.pushed_)
    assert kkt_auc >= plain_auc - 0.002, (plain_auc, kkt_auc)


@pytest.mark.parametrize(
    "given",
    [
        {},
        {"hyper": (("l1", 1.0),)},
        {"standardize": False},
        {"standardize": False, "optimizer": "adagrad", "hyper": (("l1", 1.0),)},
    ],
)
def test_the_kkt_filter_refuses_what_it_cannot_filter(given):
    with pytest.raises(ConfigError, match="--kkt-filter needs"):
        ModelSettings(kkt_filter=True, **given)
    assert ModelSettings(kkt_filter=True, standardize=False, hyper=(("l1", 1.0),)).l1 == 1.0
