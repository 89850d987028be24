"""Prequential (test-then-train) evaluation: windowed exact metrics and cumulative metrics
from a score histogram whose AUC error is bounded and reported.

Cumulative AUC from a histogram: scores are binned on the logit scale; pairs that fall in the
same bin count one half, so the error is at most ``0.5 * sum_b pos_b * neg_b / (P * N)``,
which :meth:`ScoreHistogram.auc_error_bound` returns alongside the estimate.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

from connectors.errors import ConfigError
from operators.drift import LossDrift
from operators.metrics import EPS, calibration, log_losses, summary

BINS = 1 << 16
LOGIT_RANGE = 12.0
# counters the evaluator keeps beside the tasks' metrics
DEAD_LETTER_COUNT = "__dead_letters__"
REJECTED_COUNT = "__rejected_pushes__"


def finite(value):
    """``value`` with every non-finite float inside it (an AUC of one class, a precision with
    nothing predicted positive) replaced by None, so that it is JSON for every reader.

    >>> finite({"auc": float("nan"), "w": [1.0, float("inf")], "n": 3})
    {'auc': None, 'w': [1.0, None], 'n': 3}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def metric_text(fmt: str, value, missing: str = "–") -> str:
    """``value`` formatted with ``fmt``, or ``missing`` when it is undefined (None on the
    wire, NaN in memory).

    >>> metric_text("{:.2f}", 0.5), metric_text("{:.2f}", None)
    ('0.50', '–')
    >>> metric_text("{:.2f}", float("nan"), missing="n/a")
    'n/a'
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return fmt.format(value)


def json_record(doc: dict, **dumps) -> str:
    """``doc`` as strict JSON: an undefined metric is ``null``, never ``NaN``."""
    return json.dumps(finite(doc), allow_nan=False, **dumps)


class ScoreHistogram:
    """Counts of positive and negative examples per logit bin."""

    def __init__(self, bins: int = BINS):
        self.bins = bins
        self.pos = np.zeros(bins, np.int64)
        self.neg = np.zeros(bins, np.int64)

    def add(self, labels: np.ndarray, scores: np.ndarray) -> None:
        p = np.clip(scores, EPS, 1 - EPS)
        logit = np.clip(np.log(p) - np.log1p(-p), -LOGIT_RANGE, LOGIT_RANGE)
        b = np.minimum(
            ((logit + LOGIT_RANGE) / (2 * LOGIT_RANGE) * self.bins).astype(np.int64), self.bins - 1
        )
        y = np.asarray(labels).astype(bool)
        self.pos += np.bincount(b[y], minlength=self.bins)
        self.neg += np.bincount(b[~y], minlength=self.bins)

    def auc(self) -> float:
        n_pos, n_neg = int(self.pos.sum()), int(self.neg.sum())
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        neg_below = np.cumsum(self.neg) - self.neg
        wins = (self.pos * neg_below).sum() + 0.5 * (self.pos * self.neg).sum()
        return float(wins / (n_pos * n_neg))

    def auc_error_bound(self) -> float:
        n_pos, n_neg = int(self.pos.sum()), int(self.neg.sum())
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        return float(0.5 * (self.pos * self.neg).sum() / (n_pos * n_neg))


class Prequential:
    """Metrics of one task's test-then-train predictions.

    ``add`` takes a mini-batch of predictions and returns the window records completed by it
    (count windows of ``window`` predictions, exact metrics); ``cumulative`` returns the
    running totals.
    """

    def __init__(self, task: str, window: int = 10_000, on_drift: str = "alert"):
        if window < 1:
            raise ConfigError(f"window must be >= 1, got {window}")
        self.task = task
        self.window = window
        self.hist = ScoreHistogram()
        self.count = 0
        self.loss_sum = 0.0
        self.correct = self.tp = self.predicted_pos = self.pos = 0
        self.score_sum = 0.0
        self.staleness_max = 0
        self.staleness_sum = 0
        self.version = 0
        self.first_seen = None
        self.last_seen = None
        self._buf: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._buffered = 0
        self.windows_done = 0
        self.drift = LossDrift()  # Page-Hinkley on the log loss (operators/drift.py)
        self.drifts = 0
        self.pushed = 0  # coordinates the mini-batches pushed to the shards
        # alert: the detector above raises the alerts; reset or boost: the workers detect,
        # since the shards act on what they detect, and this reports each drift once
        self.on_drift = on_drift

    def __setstate__(self, state: dict) -> None:  # state pickled before drift detection
        self.__dict__.update(
            {"drift": LossDrift(), "drifts": 0, "on_drift": "alert", "pushed": 0, **state}
        )

    def add(
        self,
        labels,
        scores,
        version: int,
        staleness: int,
        now: float | None = None,
        worker_drifts: int = 0,
        pushed: int = 0,
    ) -> list[dict]:
        """Count a mini-batch's predictions; return the windows it closes and the drifts it
        shows (``worker_drifts``: how many the worker that scored it has detected so far;
        ``pushed``: the coordinates it pushed)."""
        labels = np.asarray(labels, np.int64)
        scores = np.asarray(scores, np.float64)
        now = time.time() if now is None else now
        self.first_seen = now if self.first_seen is None else self.first_seen
        self.last_seen = now
        losses = log_losses(labels, scores)
        self.loss_sum += float(losses.sum())
        hit = scores >= 0.5
        self.correct += int(np.count_nonzero(hit == labels.astype(bool)))
        self.tp += int(np.count_nonzero(hit & labels.astype(bool)))
        self.predicted_pos += int(np.count_nonzero(hit))
        self.pos += int(labels.sum())
        self.score_sum += float(scores.sum())
        self.hist.add(labels, scores)
        self.count += labels.size
        self.pushed += pushed
        self.staleness_max = max(self.staleness_max, staleness)
        self.staleness_sum += staleness * labels.size
        self.version = max(self.version, version)
        self._buf.append((labels, scores, np.full(labels.size, version)))
        self._buffered += labels.size
        out = []
        while self._buffered >= self.window:
            out.append(self._close_window())
        if self.on_drift == "alert":
            fired = self.drift.add(losses)
        else:  # the first worker to detect a drift reports it; the shards acted on it then
            fired = [self.count] * max(0, worker_drifts - self.drifts)
        for at in fired:
            self.drifts += 1
            out.append({"type": "drift", "task": self.task, "count": at,
                        "model_version": version, "detector": "page-hinkley",
                        "chunk": self.drift.chunk, "action": self.on_drift})  # fmt: skip
        return out

    def _close_window(self) -> dict:
        y = np.concatenate([b[0] for b in self._buf])
        s = np.concatenate([b[1] for b in self._buf])
        v = np.concatenate([b[2] for b in self._buf])
        cut = self.window
        self._buf = [(y[cut:], s[cut:], v[cut:])] if y.size > cut else []
        self._buffered = y.size - cut
        start = self.windows_done * self.window
        self.windows_done += 1
        return {
            "type": "window",
            "task": self.task,
            "start": start,
            "end": start + cut,
            "model_version_min": int(v[:cut].min()),
            "model_version": int(v[:cut].max()),
            **summary(y[:cut], s[:cut]),
            "calibration": calibration(y[:cut], s[:cut]),
        }

    def cumulative(self) -> dict:
        n = self.count
        elapsed = (self.last_seen - self.first_seen) if n else 0.0
        return {
            "type": "cumulative",
            "task": self.task,
            "count": n,
            "model_version": self.version,
            "auc": self.hist.auc(),
            "auc_error_bound": self.hist.auc_error_bound(),
            "log_loss": self.loss_sum / n if n else math.nan,
            "accuracy": self.correct / n if n else math.nan,
            "precision": self.tp / self.predicted_pos if self.predicted_pos else math.nan,
            "recall": self.tp / self.pos if self.pos else math.nan,
            "mean_score": self.score_sum / n if n else math.nan,
            "positive_rate": self.pos / n if n else math.nan,
            "staleness_max": self.staleness_max,
            "staleness_mean": self.staleness_sum / n if n else math.nan,
            "events_per_s": n / elapsed if elapsed > 0 else math.nan,
            "drifts": self.drifts,
            "pushed_per_event": self.pushed / n if n else math.nan,
        }
