"""The ceiling: the fastest honest single-process code for the training job's math.

A minimal sparse FTRL-Proximal (McMahan et al., KDD 2013) logistic regression over
pre-hashed mini-batches, written as a careful numpy user would: dense ``z`` and ``n`` arrays,
and per mini-batch one ``np.unique`` of the coordinates present, one gather, one
``np.bincount`` for the margins and one for the gradient, one scatter. It shares no code with
``operators/`` on purpose: it is what the project's learner is measured against.

    >>> import numpy as np
    >>> ceiling = SparseFtrl(bits=4)
    >>> scores = ceiling.learn(np.array([0, 1, 2]), np.array([3, 5]), np.ones(2), np.array([1, 0]))
    >>> scores.tolist()
    [0.5, 0.5]
"""

from __future__ import annotations

import numpy as np


class SparseFtrl:
    """FTRL-Proximal, test-then-train on CSR mini-batches; the intercept is coordinate
    ``2**bits``. Same hyper-parameters and defaults as ``operators.optim.Ftrl``."""

    def __init__(self, bits: int, alpha=0.05, beta=1.0, l1=0.0, l2=0.0):
        self.bias = 1 << bits
        self.alpha, self.beta, self.l1, self.l2 = alpha, beta, l1, l2
        self.z = np.zeros(self.bias + 1)
        self.n = np.zeros(self.bias + 1)

    def _weights(self, z, n):
        scale = (self.beta + np.sqrt(n)) / self.alpha + self.l2
        if not self.l1:  # no soft threshold to apply
            return -z / scale
        return np.where(np.abs(z) <= self.l1, 0.0, -(z - np.sign(z) * self.l1) / scale)

    def learn(self, indptr, indices, values, labels) -> np.ndarray:
        """Score the mini-batch with the current weights, then learn from it."""
        uniq, inverse = np.unique(indices, return_inverse=True)
        uniq = np.append(uniq, self.bias)
        z, n = self.z[uniq], self.n[uniq]
        w = self._weights(z, n)
        rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
        margin = np.bincount(rows, values * w[inverse], minlength=indptr.size - 1) + w[-1]
        scores = 1.0 / (1.0 + np.exp(-np.clip(margin, -35.0, 35.0)))
        residual = scores - labels
        g = np.bincount(inverse, values * residual[rows], minlength=uniq.size)
        g[-1] = residual.sum()
        sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / self.alpha
        self.z[uniq] = z + g - sigma * w
        self.n[uniq] = n + g * g
        return scores
