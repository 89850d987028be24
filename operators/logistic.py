"""Sparse logistic regression over hashed features: scores and mini-batch gradients.

A mini-batch is CSR arrays ``(indptr, indices, values)`` over ``2**bits`` hashed coordinates;
the intercept is the extra coordinate ``2**bits`` (``bias_index``), so the whole parameter
vector has ``2**bits + 1`` entries and one range partitioning covers it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from operators.optim import B_COUNT, B_M2, B_MEAN, G_RAW, PUSH_COLUMNS

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


def batch_scores(batch: MiniBatch, w: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """Scores of the rows given the weights ``w`` at ``batch.coords``; ``offset`` is added to
    every margin (the centring of standardized coordinates, see ``operators.optim``)."""
    margin = np.bincount(batch.rows, weights=batch.values * w[batch.inverse], minlength=batch.size)
    return sigmoid(margin + (w[-1] + offset))


def batch_gradient(batch: MiniBatch, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Summed log-loss gradient at ``batch.coords``."""
    residual = scores - labels
    g = np.bincount(
        batch.inverse, weights=batch.values * residual[batch.rows], minlength=batch.coords.size
    )
    g[-1] = residual.sum()
    return g


def standardized_push(batch: MiniBatch, g: np.ndarray) -> np.ndarray:
    """The push of a standardized model (``operators.optim.Standardized``): the summed
    gradient ``g`` at ``batch.coords`` with the mini-batch's moments of each coordinate's
    present values, and a last row holding the row count and the residual sum.

    >>> b = prepare(np.array([0, 1, 2]), np.array([3, 3]), np.array([1.0, 3.0]), bits=2)
    >>> standardized_push(b, np.array([0.5, -1.0])).tolist()
    [[0.5, 2.0, 2.0, 2.0], [-1.0, 2.0, 1.0, 0.0], [2.0, -1.0, 0.0, 0.0]]
    """
    k = batch.coords.size
    out = np.zeros((k + 1, PUSH_COLUMNS))
    count = np.bincount(batch.inverse, minlength=k).astype(np.float64)
    count[-1] = batch.size
    mean = np.bincount(batch.inverse, batch.values, minlength=k) / np.maximum(count, 1)
    mean[-1] = 1.0
    dev = batch.values - mean[batch.inverse]
    out[:-1, G_RAW], out[:-1, B_COUNT], out[:-1, B_MEAN] = g, count, mean
    out[:-1, B_M2] = np.bincount(batch.inverse, dev * dev, minlength=k)
    out[-1, 0], out[-1, 1] = batch.size, g[-1]
    return out


def empty_push(standardize: bool) -> np.ndarray:
    """The push of an empty mini-batch: no gradient (standardized: only the last row, no
    rows and no residual).

    >>> empty_push(True).shape, empty_push(False).shape
    ((1, 4), (0,))
    """
    return np.zeros((1, PUSH_COLUMNS)) if standardize else np.zeros(0)


NOTHING_HELD = (np.zeros(0, np.int64), np.zeros(0))


def kkt_filter(
    coords: np.ndarray, g: np.ndarray, w: np.ndarray, l1: float, held: tuple = NOTHING_HELD
) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The KKT filter of L1-regularised logistic regression (Li et al., OSDI 2014, §5.1), for
    an online learner: a coordinate whose weight is zero and whose gradient is within ``l1``
    is not pushed, since the L1 term holds it at zero. Its gradient is held, not dropped:
    ``held`` (sorted coordinates, summed gradients) is added to the coordinate's next gradient
    and pushed with it once the sum leaves ``[-l1, l1]`` or the weight leaves zero, so FTRL's
    ``z`` still gets every gradient. The intercept (last of ``coords``) is always pushed.
    ``w`` is the weights at ``coords``. Returns the push ``(coords, g)`` and the new ``held``.

    >>> idx, g, held = kkt_filter(np.array([1, 4, 7, 16]), np.array([0.3, -2.0, 0.1, 0.2]),
    ...                           np.array([0.0, 0.0, 0.5, 0.0]), l1=1.0)
    >>> idx.tolist(), g.tolist(), held[0].tolist(), held[1].tolist()
    ([4, 7, 16], [-2.0, 0.1, 0.2], [1], [0.3])
    >>> idx, g, held = kkt_filter(np.array([1, 16]), np.array([0.8, 0.1]), np.zeros(2), 1.0, held)
    >>> idx.tolist(), g.round(6).tolist(), held[0].tolist()
    ([1, 16], [1.1, 0.1], [])
    """
    h_idx, h_g = held
    g = g.copy()
    pos = np.searchsorted(h_idx, coords)
    found = pos < h_idx.size
    found[found] = h_idx[pos[found]] == coords[found]
    g[found] += h_g[pos[found]]
    keep = (w != 0) | (np.abs(g) > l1)
    keep[-1] = True
    rest = np.ones(h_idx.size, bool)
    rest[pos[found]] = False  # held entries this push took up again
    h_idx = np.concatenate((h_idx[rest], coords[~keep]))
    h_g = np.concatenate((h_g[rest], g[~keep]))
    order = np.argsort(h_idx, kind="stable")
    return coords[keep], g[keep], (h_idx[order], h_g[order])


def predict_proba(indptr, indices, values, lookup, bits: int, offset: float = 0.0) -> np.ndarray:
    """Scores of a mini-batch; ``lookup(idx)`` returns current weights at coordinates ``idx``."""
    batch = prepare(indptr, indices, values, bits)
    return batch_scores(batch, lookup(batch.coords), offset)


def gradient(indptr, indices, values, labels, scores, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Summed log-loss gradient of a mini-batch as sorted unique ``(coordinates, gradients)``."""
    batch = prepare(indptr, indices, values, bits)
    return batch.coords, batch_gradient(batch, labels, scores)
