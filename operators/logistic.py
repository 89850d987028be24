"""Sparse logistic regression over hashed features: scores and mini-batch gradients.

A mini-batch is CSR arrays ``(indptr, indices, values)`` over ``2**bits`` hashed coordinates;
the intercept is the extra coordinate ``2**bits`` (``bias_index``), so the whole parameter
vector has ``2**bits + 1`` entries and one range partitioning covers it.
"""

from __future__ import annotations

import numpy as np

MAX_MARGIN = 35.0  # sigmoid is 0 or 1 to double precision beyond this


def bias_index(bits: int) -> int:
    return 1 << bits


def dimension(bits: int) -> int:
    return (1 << bits) + 1


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.clip(z, -MAX_MARGIN, MAX_MARGIN)
    return 1.0 / (1.0 + np.exp(-z))


def margins(
    indptr: np.ndarray, values: np.ndarray, weights_at: np.ndarray, bias: float
) -> np.ndarray:
    """Per-row ``x . w + b`` given the weights gathered at each stored entry."""
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    return np.bincount(rows, weights=values * weights_at, minlength=indptr.size - 1) + bias


def predict_proba(indptr, indices, values, lookup, bits: int) -> np.ndarray:
    """Scores of a mini-batch; ``lookup(idx)`` returns current weights at coordinates ``idx``."""
    uniq, inverse = np.unique(np.append(indices, bias_index(bits)), return_inverse=True)
    w = lookup(uniq)
    return sigmoid(margins(indptr, values, w[inverse[:-1]], w[inverse[-1]]))


def gradient(indptr, indices, values, labels, scores, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Summed log-loss gradient of a mini-batch as sorted unique ``(coordinates, gradients)``."""
    residual = scores - labels
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    idx = np.append(indices, bias_index(bits))
    contrib = np.append(values * residual[rows], residual.sum())
    uniq, inverse = np.unique(idx, return_inverse=True)
    return uniq, np.bincount(inverse, weights=contrib, minlength=uniq.size)
