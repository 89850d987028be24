import numpy as np
import pytest
from sklearn.feature_extraction import FeatureHasher
from sklearn.linear_model import SGDClassifier

from connectors.hashing import hash_batch
from operators.export import from_sklearn, to_sklearn
from operators.local import OnlineLogistic
from operators.synthetic import CtrSettings, CtrStream

BITS = 16


def stream(n, seed):
    docs, labels = [], []
    for d, _, y in CtrStream(CtrSettings(events=n, seed=seed)).chunks():
        docs += d
        labels.append(y)
    return docs, np.concatenate(labels)


def test_exported_pipeline_scores_like_the_streaming_model():
    docs, y = stream(5000, 31)
    model = OnlineLogistic(bits=BITS, alpha=0.1)
    for lo in range(0, 5000, 100):
        batch = docs[lo : lo + 100]
        model.learn_many(*hash_batch([d["features"] for d in batch], BITS), y[lo : lo + 100])
    test_docs, _ = stream(2000, 32)
    features = [d["features"] for d in test_docs]
    streaming = model.predict_proba_many(*hash_batch(features, BITS))
    exported = to_sklearn(model.weights_, BITS).predict_proba(features)[:, 1]
    assert np.max(np.abs(streaming - exported)) <= 1e-6
    assert np.ptp(streaming) > 0.1  # a model that learned something


def test_warm_start_from_a_fitted_sgd_classifier():
    docs, y = stream(4000, 33)
    X = FeatureHasher(n_features=2**BITS, input_type="dict").transform(
        [d["features"] for d in docs]
    )
    clf = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    weights = from_sklearn(clf, BITS)
    model = OnlineLogistic(bits=BITS)
    model.replica_.assign(np.arange(weights.size), weights)
    test_docs, _ = stream(500, 34)
    features = [d["features"] for d in test_docs]
    ours = model.predict_proba_many(*hash_batch(features, BITS))
    theirs = clf.predict_proba(
        FeatureHasher(n_features=2**BITS, input_type="dict").transform(features)
    )[:, 1]
    assert np.max(np.abs(ours - theirs)) <= 1e-6


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="2\\*\\*bits \\+ 1"):
        to_sklearn(np.zeros(10), bits=4)
    with pytest.raises(ValueError, match="binary linear model over 2\\*\\*4"):
        from_sklearn(SGDClassifier(), bits=4)
