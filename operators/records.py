"""The records between the training job's Python operators, as named tuples (pickled across
the Python/Java bridge, so their classes must stay importable under these names):

- ``WorkerExamples``: the parser's examples for one worker, hashed, as columns;
- ``Push``: a worker's gradient for one shard at one of its clocks;
- ``Scored``: a mini-batch's labels and scores, for the evaluator;
- ``Count``: a counter's increment (dead letters, rejected pushes), for the evaluator;
- ``KeyedUpdates``: decoded model updates of one task, for one worker (or serving replica).

Model updates travel between jobs as bytes (``connectors/messages.py``); digests as JSON
(``Digests``).

>>> p = Push("ctr", 2, "ctr#0", 7, np.array([5]), np.array([0.25]))
>>> p.key, p.clock
('ctr/2', 7)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from operators.examples import Examples


class WorkerExamples(NamedTuple):
    task: str
    worker: str  # the worker's key, ``task#i``: what the workers are keyed by
    examples: Examples

    @property
    def key(self) -> str:
        return self.worker


class Push(NamedTuple):
    task: str
    shard: int
    worker: str
    clock: int
    indices: np.ndarray
    grads: np.ndarray
    drift: int = 0  # --on-drift reset|boost: the drifts the worker has detected so far

    @property
    def key(self) -> str:
        """What the shards are keyed by: ``task/shard``."""
        return f"{self.task}/{self.shard}"


class Scored(NamedTuple):
    task: str
    labels: np.ndarray
    scores: np.ndarray
    version: int  # of the model that scored them
    staleness: int  # in mini-batches
    drift: int = 0  # --on-drift reset|boost: the drifts the worker has detected so far
    pushed: int = 0  # coordinates the mini-batch pushed to the shards

    @property
    def key(self) -> str:
        """What the evaluator is keyed by: the task."""
        return self.task


class Count(NamedTuple):
    name: str  # DEAD_LETTER_COUNT or REJECTED_COUNT (operators/evaluation.py)
    n: int

    @property
    def key(self) -> str:
        """What the evaluator keeps a counter under: its name."""
        return self.name


class KeyedUpdates(NamedTuple):
    key: str  # the worker's (or serving replica's) key, ``task#i``
    updates: list  # connectors.messages.ModelUpdate, in topic order
