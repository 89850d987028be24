"""Sparse logistic regression over hashed features: scores and mini-batch gradients.

A mini-batch is CSR arrays ``(indptr, indices, values)`` over ``2**bits`` hashed coordinates;
the intercept is the extra coordinate ``2**bits`` (``bias_index``), so the whole parameter
vector has ``2**bits + 1`` entries and one range partitioning covers it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MAX_MARGIN = 35.0  # sigmoid is 0 or 1 to double precision beyond this


def bias_index(bits: int) -> int:
    return 1 << bits


def dimension(bits: int) -> int:
    return (1 << bits) + 1


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.clip(z, -MAX_MARGIN, MAX_MARGIN)
    return 1.0 / (1.0 + np.exp(-z))


class MiniBatch(NamedTuple):
    """A CSR mini-batch prepared once for scoring and the gradient: the sorted unique
    coordinates it touches (``coords``, the intercept last) and, per stored entry, its row and
    its position in ``coords``."""

    rows: np.ndarray
    values: np.ndarray
    coords: np.ndarray
    inverse: np.ndarray
    size: int


def prepare(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, bits: int) -> MiniBatch:
    """One ``np.unique`` per mini-batch; every index must be below ``2**bits``.

    >>> b = prepare(np.array([0, 2, 3]), np.array([5, 2, 5]), np.ones(3), bits=4)
    >>> b.coords.tolist(), b.inverse.tolist(), b.rows.tolist()
    ([2, 5, 16], [1, 0, 1], [0, 0, 1])
    """
    uniq, inverse = np.unique(indices, return_inverse=True)
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    coords = np.append(uniq, bias_index(bits))
    return MiniBatch(rows, values, coords, inverse.reshape(-1), indptr.size - 1)


def batch_scores(batch: MiniBatch, w: np.ndarray) -> np.ndarray:
    """Scores of the rows given the weights ``w`` at ``batch.coords``."""
    margin = np.bincount(batch.rows, weights=batch.values * w[batch.inverse], minlength=batch.size)
    return sigmoid(margin + w[-1])


def batch_gradient(batch: MiniBatch, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Summed log-loss gradient at ``batch.coords``."""
    residual = scores - labels
    g = np.bincount(
        batch.inverse, weights=batch.values * residual[batch.rows], minlength=batch.coords.size
    )
    g[-1] = residual.sum()
    return g


def predict_proba(indptr, indices, values, lookup, bits: int) -> np.ndarray:
    """Scores of a mini-batch; ``lookup(idx)`` returns current weights at coordinates ``idx``."""
    batch = prepare(indptr, indices, values, bits)
    return batch_scores(batch, lookup(batch.coords))


def gradient(indptr, indices, values, labels, scores, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Summed log-loss gradient of a mini-batch as sorted unique ``(coordinates, gradients)``."""
    batch = prepare(indptr, indices, values, bits)
    return batch.coords, batch_gradient(batch, labels, scores)
