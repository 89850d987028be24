"""Hashed examples as columns: what the parser hands a worker and what a worker keeps in its
buffer until it trains them.

One :class:`Examples` holds many examples as a few arrays (a CSR matrix of hashed rows, the
labels) and the event ids, so that it crosses the Python/Java bridge and keyed state as one
small pickle: a list of one tuple per example pickled 2.5x slower, and a worker pickles
its buffer on the way into state and back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Examples:
    """Examples of one task, in arrival order: row ``i`` is event ``event_ids[i]`` with label
    ``labels[i]`` and hashed features ``indices[indptr[i]:indptr[i+1]]`` (values alike)."""

    task: str
    event_ids: list[str]
    labels: np.ndarray  # int8, 0 or 1
    indptr: np.ndarray  # int64, len(event_ids) + 1, from 0
    indices: np.ndarray  # int64
    values: np.ndarray  # float64

    def __len__(self) -> int:  # the number of examples
        return len(self.event_ids)

    def rows(self, start: int, stop: int) -> Examples:
        """Examples ``start`` to ``stop`` (``stop`` past the end is the end).

        >>> ex = Examples.of("t", ["a", "b", "c"], [1, 0, 1], [0, 2, 2, 3], [4, 5, 6], [1., 2., 3.])
        >>> part = ex.rows(1, 3)
        >>> part.event_ids, part.indptr.tolist(), part.indices.tolist()
        (['b', 'c'], [0, 0, 1], [6])
        """
        stop = min(stop, len(self))
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        return Examples(
            self.task,
            self.event_ids[start:stop],
            self.labels[start:stop],
            self.indptr[start : stop + 1] - lo,
            self.indices[lo:hi],
            self.values[lo:hi],
        )

    @staticmethod
    def of(task, event_ids, labels, indptr, indices, values) -> Examples:
        """Examples with the dtypes above from any sequences."""
        return Examples(
            task,
            list(event_ids),
            np.asarray(labels, np.int8),
            np.asarray(indptr, np.int64),
            np.asarray(indices, np.int64),
            np.asarray(values, np.float64),
        )

    @staticmethod
    def concat(parts: list[Examples]) -> Examples:
        """``parts`` one after the other (all of one task; at least one).

        >>> a = Examples.of("t", ["a"], [1], [0, 2], [4, 5], [1., 2.])
        >>> b = Examples.of("t", ["b", "c"], [0, 1], [0, 0, 1], [6], [3.])
        >>> ab = Examples.concat([a, b])
        >>> ab.event_ids, ab.labels.tolist(), ab.indptr.tolist(), ab.values.tolist()
        (['a', 'b', 'c'], [1, 0, 1], [0, 2, 2, 3], [1.0, 2.0, 3.0])
        """
        if len(parts) == 1:
            return parts[0]
        ends = np.cumsum([0] + [int(p.indptr[-1]) for p in parts[:-1]])
        indptr = [parts[0].indptr[:1]] + [
            p.indptr[1:] + end for p, end in zip(parts, ends, strict=True)
        ]
        return Examples(
            parts[0].task,
            [event_id for p in parts for event_id in p.event_ids],
            np.concatenate([p.labels for p in parts]),
            np.concatenate(indptr),
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.values for p in parts]),
        )
