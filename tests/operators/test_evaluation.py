import numpy as np
import pytest
from sklearn import metrics as skm

from operators.evaluation import Prequential, ScoreHistogram
from operators.synthetic import CtrSettings, CtrStream


def ctr_scores(n=60_000, seed=4):
    probs, labels = [], []
    for _, p, y in CtrStream(CtrSettings(events=n, seed=seed)).chunks():
        probs.append(p)
        labels.append(y)
    return np.concatenate(labels), np.concatenate(probs)


def test_histogram_auc_is_within_its_stated_bound_and_the_bound_within_1e4():
    y, p = ctr_scores()
    hist = ScoreHistogram()
    for lo in range(0, y.size, 7000):
        hist.add(y[lo : lo + 7000], p[lo : lo + 7000])
    exact = skm.roc_auc_score(y, p)
    bound = hist.auc_error_bound()
    assert bound <= 1e-4
    assert abs(hist.auc() - exact) <= bound


def test_a_coarse_histogram_says_so():
    y, p = ctr_scores(20_000)
    hist = ScoreHistogram(bins=16)
    hist.add(y, p)
    assert abs(hist.auc() - skm.roc_auc_score(y, p)) <= hist.auc_error_bound()
    assert hist.auc_error_bound() > 1e-3


def test_prequential_windows_are_exact_and_cumulative_matches():
    y, p = ctr_scores(25_000)
    ev = Prequential("ctr", window=10_000)
    windows = []
    for lo in range(0, y.size, 300):
        windows += ev.add(y[lo : lo + 300], p[lo : lo + 300], version=lo, staleness=(lo // 300) % 3)
    assert [w["start"] for w in windows] == [0, 10_000]
    for w in windows:
        sl = slice(w["start"], w["end"])
        assert abs(w["auc"] - skm.roc_auc_score(y[sl], p[sl])) <= 1e-9
        assert abs(w["log_loss"] - skm.log_loss(y[sl], p[sl])) <= 1e-9
        assert w["count"] == 10_000
    cum = ev.cumulative()
    assert cum["count"] == y.size
    assert abs(cum["log_loss"] - skm.log_loss(y, p)) <= 1e-9
    assert abs(cum["accuracy"] - skm.accuracy_score(y, p >= 0.5)) <= 1e-9
    assert abs(cum["auc"] - skm.roc_auc_score(y, p)) <= cum["auc_error_bound"]
    assert cum["staleness_max"] == 2


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="window must be >= 1"):
        Prequential("t", window=0)


def test_an_undefined_metric_is_null_on_the_wire_never_nan():
    import json

    from operators.evaluation import json_record

    p = Prequential("t", window=2)
    (window,) = p.add([1, 1], [0.9, 0.8], version=1, staleness=0, now=5.0)  # one class only
    assert np.isnan(window["auc"])
    strict = {"parse_constant": lambda name: pytest.fail(f"{name} in a metrics record")}
    assert json.loads(json_record(window), **strict)["auc"] is None
    cumulative = json.loads(json_record(p.cumulative()), **strict)
    assert cumulative["events_per_s"] is None and cumulative["count"] == 2
