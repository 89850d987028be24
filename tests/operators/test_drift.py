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
