"""The single-process reference learner: the training job's math without Flink.

It runs the very functions the Flink operators run (scoring on a replica, the summed sparse
gradient, the shard's server function, the significantly-modified filter), one mini-batch at a
time, so it is the yardstick the distributed job is measured against.
"""

from __future__ import annotations

import numpy as np

from operators.dense_range import DenseRange
from operators.drift import LossDrift
from operators.logistic import (
    NOTHING_HELD,
    batch_gradient,
    batch_scores,
    dimension,
    kkt_filter,
    prepare,
    standardized_push,
)
from operators.metrics import log_losses
from operators.optim import make_rule
from operators.ps import BLOCK
from operators.shard_server import ShardServer


class OnlineLogistic:
    """Online logistic regression over hashed features, trained test-then-train.

    Parameters
    ----------
    bits
        Hashed feature space is ``2**bits`` (plus one intercept coordinate).
    optimizer
        ``"ftrl"``, ``"adagrad"`` or ``"sgd"``; ``hyper`` holds its hyper-parameters.
    update_threshold
        Significantly-modified filter: a weight reaches the replica only once it moved more
        than this since it was last sent.
    standardize
        Learn over standardized numeric coordinates (``operators.optim.Standardized``).
    on_drift
        ``"alert"`` (nothing here), ``"reset"`` or ``"boost"``: what a drift in the
        prequential loss does to the model, as ``train --on-drift`` (detected as a worker
        does, on this learner's own predictions; ``drifts_`` counts them).
    kkt
        The KKT filter (``operators.logistic.kkt_filter``; FTRL with ``l1`` > 0, not
        standardized): coordinates held at zero by the L1 term are not pushed.

    Examples
    --------
    >>> model = OnlineLogistic(bits=4, alpha=0.5)
    >>> indptr, indices, values = np.array([0, 1, 2]), np.array([3, 5]), np.array([1.0, 1.0])
    >>> scores = model.learn_many(indptr, indices, values, np.array([1, 0]))
    >>> scores.tolist()   # scored before learning: the model knew nothing
    [0.5, 0.5]
    >>> bool(model.predict_proba_many(indptr, indices, values)[0] > 0.5)
    True
    """

    def __init__(
        self,
        bits: int = 20,
        optimizer: str = "ftrl",
        update_threshold: float = 0.0,
        init_weights: np.ndarray | None = None,
        standardize: bool = True,
        kkt: bool = False,
        on_drift: str = "alert",
        **hyper,
    ):
        self.bits = bits
        self.optimizer = optimizer
        self.update_threshold = update_threshold
        self.init_weights = init_weights
        self.standardize = standardize
        self.kkt = kkt
        self.on_drift = on_drift
        self.drift_ = LossDrift()
        self.drifts_ = 0
        self.warm_from_ = 0  # the mini-batch the warm-up counts from (after a drift action)
        self.hyper = hyper
        optim = make_rule(optimizer, standardize, **hyper)
        dim = dimension(bits)
        self.server_ = ShardServer(optim, update_threshold)
        # one shard over the whole range, dense in memory, as the training job's shards hold it
        self.shard_ = DenseRange((*optim.state_names, "sent"), 0, dim, BLOCK)
        # the worker's replica holds exactly what the shard last sent: with one worker and one
        # shard in one process it is the shard's ``sent`` array itself, not a second copy
        self.replica_ = DenseRange((), 0, dim, BLOCK)
        self.replica_.arrays["w"] = self.shard_.arrays["sent"]
        if init_weights is not None:  # a warm start, as train --init-model
            self.server_.warm_dense(self.shard_, init_weights)
        self.version_ = 0
        self.rejected_ = 0
        self.updates_sent_ = 0
        self.rows_ = 0  # rows learned from (the standardization's count)
        self.batches_ = 0  # mini-batches learned from (a worker's clock)
        self.pushed_ = 0  # coordinates pushed to the shard
        self.held_ = NOTHING_HELD  # gradients the KKT filter holds back

    def predict_proba_many(self, indptr, indices, values) -> np.ndarray:
        batch = prepare(indptr, indices, values, self.bits)
        return batch_scores(batch, self.replica_.lookup(batch.coords), -self.shard_.offset)

    def learn_many(self, indptr, indices, values, labels) -> np.ndarray:
        """Score a mini-batch with the current weights, then learn from it; return the scores."""
        batch = prepare(indptr, indices, values, self.bits)
        w = self.replica_.lookup(batch.coords)
        scores = batch_scores(batch, w, -self.shard_.offset)
        fired = self.drift_.add(log_losses(labels, scores)) if self.on_drift != "alert" else []
        if fired:  # as a shard does before it applies the push that says so
            self.drifts_ += len(fired)
            self.warm_from_ = self.batches_ + 1  # as a worker's mini-batches do
            self.server_.act_dense(self.shard_, self.on_drift)
            if self.on_drift == "reset":
                self.rows_ = 0
            self.version_ += 1
        idx, g = batch.coords, batch_gradient(batch, np.asarray(labels, float), scores)
        rows = self.rows_
        if self.standardize:  # as a shard does: the running row count in the last row
            g = standardized_push(batch, g)
            rows = g[-1, 0] = self.rows_ + batch.size
        elif self.kkt:
            idx, g, self.held_ = kkt_filter(idx, g, w, self.hyper["l1"], self.held_)
        self.pushed_ += idx.size
        applied = self.server_.apply_dense(self.shard_, idx, g)
        self.batches_ += 1
        if applied is None:
            self.rejected_ += 1
        else:  # the replica (``sent``) already holds the changed weights
            self.updates_sent_ += applied[0].size
            self.version_ += 1
            self.rows_ = int(rows)
        return scores

    @property
    def age_(self) -> int:
        """Mini-batches since the warm-up began: the next one's size is
        ``batch_size_at(age_)``."""
        return self.batches_ - self.warm_from_

    @property
    def weights_(self) -> np.ndarray:
        """Weights on the raw values, the centring folded into the intercept: a plain
        linear model that scores as this one does."""
        w = self.replica_.arrays["w"][: dimension(self.bits)].copy()
        w[-1] -= self.shard_.offset
        return w

    def state_dict(self) -> dict:
        return {
            "bits": self.bits,
            "optimizer": self.optimizer,
            "hyper": dict(self.hyper),
            "version": self.version_,
            "weights": self.weights_,
        }
