"""Drift detection on the prequential loss (operators/drift.py, pure, no JVM)."""

import pickle

import numpy as np
import pytest

from connectors.errors import ConfigError
from connectors.hashing import hash_batch
from operators.drift import LossDrift, PageHinkley
from operators.evaluation import Prequential
from operators.local import OnlineLogistic
from operators.ps import batch_size_at
from operators.synthetic import CtrSettings, CtrStream


def test_a_stationary_mean_never_alarms_and_a_rise_alarms_within_a_few_chunks():
    rng = np.random.default_rng(1)
    ph = PageHinkley()
    assert not any(ph.add(x) for x in rng.normal(0.3, 0.02, 20_000))
    rises = [ph.add(x) for x in rng.normal(0.36, 0.02, 100)]
    assert True in rises and rises.index(True) < 15
    # a fall of the loss (the learner getting better) is not a drift
    assert not any(PageHinkley().add(x) for x in np.linspace(0.6, 0.2, 2_000))


def test_the_chunks_do_not_depend_on_how_the_losses_are_batched():
    rng = np.random.default_rng(2)
    losses = np.r_[rng.exponential(0.3, 30_000), rng.exponential(0.5, 10_000)]
    whole = LossDrift().add(losses)
    pieces, cut = LossDrift(), np.sort(rng.choice(losses.size, 57, replace=False))
    split = [at for part in np.split(losses, cut) for at in pieces.add(part)]
    assert whole == split and whole and whole[0] > 30_000
    mid = LossDrift()  # pickled half way (it lives in Flink state): the same alarms
    first = mid.add(losses[:35_000])
    assert first + pickle.loads(pickle.dumps(mid)).add(losses[35_000:]) == whole


def test_settings_a_detector_cannot_run_with_are_refused():
    with pytest.raises(ConfigError):
        PageHinkley(alpha=0)


def _drift_alerts(events: int, drift_at, seed: int) -> list[int]:
    """The job's learner and evaluator over the synthetic stream, as the local engine runs
    them: the predictions at which a drift was reported."""
    bits = 16
    model, ev = OnlineLogistic(bits, "ftrl", alpha=0.2, beta=1.0), Prequential("ctr")
    batch, alerts = [], []
    for doc, _ in CtrStream(CtrSettings(events=events, seed=seed, drift_at=drift_at)).events():
        batch.append(doc)
        if len(batch) >= batch_size_at(model.batches_, 1000, True):
            labels = [d["label"] for d in batch]
            version = model.version_
            scores = model.learn_many(*hash_batch([d["features"] for d in batch], bits), labels)
            alerts += [
                r["count"] for r in ev.add(labels, scores, version, 0) if r["type"] == "drift"
            ]
            batch = []
    return alerts


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])  # the slowest detection of ten seeds, and a typical one
def test_generate_drift_at_100000_is_detected_within_20000_events_and_a_calm_stream_never(seed):
    alerts = _drift_alerts(130_000, 100_000, seed)
    assert alerts and 100_000 < alerts[0] <= 120_000, alerts
    assert _drift_alerts(130_000, None, seed) == []


# ---- --on-drift reset|boost ---------------------------------------------------------------


def test_boost_keeps_the_weights_and_raises_the_next_steps():
    from operators.optim import Ftrl

    rule, rng, idx = Ftrl(alpha=0.2, beta=1e-9), np.random.default_rng(4), np.arange(50)
    state = rule.init_state(50)
    for _ in range(30):  # a history: n grows, the steps shrink
        rule.apply(state, idx, rng.normal(size=50))
    before = rule.weights(state, idx)
    boosted = {k: v.copy() for k, v in state.items()}
    rule.boost(boosted, 4.0)
    np.testing.assert_allclose(rule.weights(boosted, idx), before, rtol=1e-6)
    g = rng.normal(size=50)
    ratio = np.abs(rule.apply(boosted, idx, g) - before) / np.abs(
        rule.apply(state, idx, g) - before
    )
    # about 4x (a new gradient's square adds to n, of which the history is now a sixteenth)
    assert ratio.min() > 2 and np.median(ratio) > 3, ratio


def _learned(on_drift="alert", events=3_000):
    model = OnlineLogistic(16, on_drift=on_drift)
    docs = [d for d, _ in CtrStream(CtrSettings(events=events, seed=5)).events()]
    for lo in range(0, events, 100):
        part = docs[lo : lo + 100]
        model.learn_many(*hash_batch([d["features"] for d in part], 16), [d["label"] for d in part])
    return model


@pytest.mark.parametrize("action", ["reset", "boost"])
def test_an_action_sends_every_coordinate_the_shard_holds_and_replays_from_the_journal(action):
    from operators.dense_range import DenseRange

    model = _learned()
    server, shard = model.server_, model.shard_
    arrays = {k: v.copy() for k, v in shard.arrays.items()}
    held = np.flatnonzero(arrays["n"])
    idx, w = server.act_dense(shard, action)
    assert set(held) <= set(idx) and idx.size < arrays["n"].size  # not the whole range
    # what it sends is what the shard now holds, and the replicas score with that
    np.testing.assert_array_equal(w, server.optimizer.weights(shard.arrays, idx))
    np.testing.assert_array_equal(shard.arrays["sent"][idx], w)
    if action == "reset":
        assert not np.any(w) and shard.offset == 0 and not np.any(shard.arrays["n"])
    else:
        assert np.count_nonzero(w) == np.count_nonzero(arrays["sent"][idx])
        np.testing.assert_allclose(shard.arrays["n"][idx], arrays["n"][idx] / 16)
    # a journal entry (action,) replays to the same state
    again = DenseRange(tuple(arrays), shard.lo, shard.lo + arrays["n"].size, shard.block)
    for k, v in arrays.items():
        again.arrays[k][:] = v
    server.load_offset(again)
    server.replay(again, (action,))
    for k in arrays:
        np.testing.assert_array_equal(again.arrays[k], shard.arrays[k])
    assert again.offset == pytest.approx(shard.offset, abs=1e-12)


def test_with_an_action_the_evaluator_reports_each_drift_a_worker_detected_once():
    ev = Prequential("ctr", on_drift="boost")
    labels, scores = np.array([0, 1] * 250), np.full(500, 0.5)
    reported = []
    for worker_drifts in (0, 1, 1, 0, 2, 2):  # two workers: the second's first drift again
        reported += [r for r in ev.add(labels, scores, 3, 0, 0.0, worker_drifts)
                     if r["type"] == "drift"]  # fmt: skip
    assert [(r["count"], r["action"]) for r in reported] == [(1000, "boost"), (2500, "boost")]
    assert ev.cumulative()["drifts"] == 2


def _post_drift_auc(on_drift: str, seed: int, events=140_000, drift_at=100_000):
    """The AUC of the 30,000 predictions after the first drift detected (and that event)."""
    from operators.metrics import roc_auc

    model, scores, labels, first = OnlineLogistic(16, on_drift=on_drift), [], [], None
    detector, batch, seen = LossDrift(), [], 0
    for doc, _ in CtrStream(CtrSettings(events=events, seed=seed, drift_at=drift_at)).events():
        batch.append(doc)
        if len(batch) >= batch_size_at(model.age_, 1000, True):
            y = np.array([d["label"] for d in batch])
            s = model.learn_many(*hash_batch([d["features"] for d in batch], 16), y)
            scores.append(s)
            labels.append(y)
            fired = detector.add(-(y * np.log(np.clip(s, 1e-15, 1)) + (1 - y) * np.log1p(
                -np.clip(s, 0, 1 - 1e-15))))  # fmt: skip
            first = first or (fired and seen + len(batch))
            seen += len(batch)
            batch = []
    s, y = np.concatenate(scores), np.concatenate(labels)
    return first, roc_auc(y[first : first + 30_000], s[first : first + 30_000])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_boost_learns_the_drifted_stream_better_than_no_action(seed):
    at, plain = _post_drift_auc("alert", seed)
    boosted_at, boosted = _post_drift_auc("boost", seed)
    assert 100_000 < at == boosted_at <= 120_000  # the same detector, the same alarm
    assert boosted > plain + 0.005, (plain, boosted)
