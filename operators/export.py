"""scikit-learn interop: a streamshard logistic model as a ``Pipeline(FeatureHasher, LR)``.

The hashed coordinate ``i < 2**bits`` is ``FeatureHasher(n_features=2**bits,
input_type="dict")``'s column ``i`` (see :mod:`connectors.hashing`) and the coordinate
``2**bits`` is the intercept, so the pipeline's ``predict_proba`` equals the streaming scores.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction import FeatureHasher
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from connectors.errors import ConfigError
from operators.logistic import dimension


def to_sklearn(weights: np.ndarray, bits: int) -> Pipeline:
    """A fitted-looking pipeline scoring event feature dicts with ``weights``.

    Examples
    --------
    >>> pipe = to_sklearn(np.zeros(2**4 + 1), bits=4)
    >>> pipe.predict_proba([{"os": "ios"}])[0].tolist()
    [0.5, 0.5]
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (dimension(bits),):
        raise ConfigError(
            f"weights must have 2**bits + 1 = {dimension(bits)} entries, got {weights.shape}"
        )
    model = LogisticRegression()
    model.classes_ = np.array([0, 1])
    model.coef_ = weights[:-1].reshape(1, -1).copy()
    model.intercept_ = weights[-1:].copy()
    model.n_features_in_ = 1 << bits
    model.n_iter_ = np.array([0])
    return Pipeline(
        [("hash", FeatureHasher(n_features=1 << bits, input_type="dict")), ("model", model)]
    )


def from_sklearn(model, bits: int) -> np.ndarray:
    """Weights (``2**bits + 1``, intercept last) of a fitted binary linear classifier
    (``LogisticRegression`` or ``SGDClassifier``), or of a pipeline ending in one, trained on
    the same hashing; the warm start for ``train``."""
    if isinstance(model, Pipeline):
        model = model.steps[-1][1]
    coef = np.asarray(getattr(model, "coef_", None), dtype=np.float64)
    if coef.ndim != 2 or coef.shape != (1, 1 << bits):
        raise ConfigError(
            f"expected a fitted binary linear model over 2**{bits} hashed features, "
            f"got coef_ of shape {coef.shape}"
        )
    return np.append(coef[0], float(np.ravel(model.intercept_)[0]))
