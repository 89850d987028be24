import numpy as np
import pytest
from sklearn import metrics as skm

from operators.metrics import log_loss, roc_auc, summary


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_log_loss_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 2000)
    s = np.round(rng.random(2000), 2)  # rounded: many ties
    assert abs(roc_auc(y, s) - skm.roc_auc_score(y, s)) <= 1e-9
    assert abs(log_loss(y, s) - skm.log_loss(y, s)) <= 1e-9


def test_summary_matches_scikit_learn():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 500)
    s = rng.random(500)
    out = summary(y, s)
    assert abs(out["accuracy"] - skm.accuracy_score(y, s >= 0.5)) <= 1e-9
    assert abs(out["precision"] - skm.precision_score(y, s >= 0.5)) <= 1e-9
    assert abs(out["recall"] - skm.recall_score(y, s >= 0.5)) <= 1e-9
    assert out["count"] == 500


def test_one_class_auc_is_nan():
    assert np.isnan(roc_auc(np.ones(5), np.arange(5)))
