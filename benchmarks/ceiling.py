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

    def __init__(self, bits: int, alpha=0.2, beta=1.0, l1=0.0, l2=0.0):
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


class StandardizedSparseFtrl(SparseFtrl):
    """The same FTRL over standardized coordinates (``train``'s default): per coordinate the
    count, sum and sum of squares of its present values, the rows seen, and the centring
    ``C = sum(w' center / scale)`` subtracted from every margin; a coordinate whose present
    values never vary is only divided by their magnitude. Plain sums here, where the shards
    merge moments."""

    def __init__(self, bits: int, alpha=0.2, beta=1.0, l1=0.0, l2=0.0):
        super().__init__(bits, alpha, beta, l1, l2)
        size = self.bias + 1
        self.count, self.s1, self.s2 = np.zeros(size), np.zeros(size), np.zeros(size)
        self.center, self.scale = np.zeros(size), np.ones(size)
        self.rows, self.offset = 0, 0.0

    def learn(self, indptr, indices, values, labels) -> np.ndarray:
        uniq, inverse = np.unique(indices, return_inverse=True)
        uniq = np.append(uniq, self.bias)
        z, n = self.z[uniq], self.n[uniq]
        w = self._weights(z, n)
        old_offset = (w * self.center[uniq] / self.scale[uniq]).sum()
        rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
        v = w / self.scale[uniq]
        margin = np.bincount(rows, values * v[inverse], minlength=indptr.size - 1) + v[-1]
        scores = 1.0 / (1.0 + np.exp(-np.clip(margin - self.offset, -35.0, 35.0)))
        residual = scores - labels
        # the moments, with the intercept a constant 1 in every row
        self.rows += indptr.size - 1
        k = uniq.size
        self.count[uniq] += np.append(np.bincount(inverse, minlength=k - 1), indptr.size - 1)
        self.s1[uniq] += np.append(np.bincount(inverse, values, minlength=k - 1), indptr.size - 1)
        self.s2[uniq] += np.append(
            np.bincount(inverse, values**2, minlength=k - 1), indptr.size - 1
        )
        c, s1, s2 = self.count[uniq], self.s1[uniq], self.s2[uniq]
        numeric = s2 / c - (s1 / c) ** 2 > 1e-12 * (1 + (s1 / c) ** 2)
        center = s1 / self.rows
        var = s2 / self.rows - center**2
        ok = numeric & (var > 0)
        self.center[uniq] = np.where(ok, center, 0.0)
        magnitude = np.abs(s1 / c)  # a constant so far: scaled by its magnitude
        self.scale[uniq] = np.where(ok, np.sqrt(np.where(ok, var, 1.0)), magnitude)
        g = np.bincount(inverse, values * residual[rows], minlength=k)
        g[-1] = residual.sum()
        g = (g - self.center[uniq] * g[-1]) / self.scale[uniq]
        sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / self.alpha
        self.z[uniq] = z + g - sigma * w
        self.n[uniq] = n + g * g
        w = self._weights(self.z[uniq], self.n[uniq])
        self.offset += (w * self.center[uniq] / self.scale[uniq]).sum() - old_offset
        return scores
