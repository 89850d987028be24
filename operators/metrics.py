"""Binary classification metrics over numpy arrays: the one metric module every job uses."""

from __future__ import annotations

import numpy as np

EPS = float(np.finfo(np.float64).eps)  # the clip scikit-learn uses


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (ties count one half), equal to scikit-learn's ``roc_auc_score``.

    Returns ``nan`` when only one class is present.

    Examples
    --------
    >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(np.count_nonzero(labels))
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [scores.size]))
    avg_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(scores.size)
    ranks[order] = np.repeat(avg_rank, ends - starts)
    rank_sum = ranks[labels.astype(bool)].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_losses(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each prediction's binary cross-entropy, scores clipped to [eps, 1 - eps] as
    scikit-learn does."""
    p = np.clip(np.asarray(scores, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(labels, dtype=np.float64)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def log_loss(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean binary cross-entropy (``log_losses``)."""
    return float(np.mean(log_losses(labels, scores)))


def summary(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUC, log loss, accuracy, precision, recall and calibration of one set of predictions."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(scores, dtype=np.float64)
    hit = p >= threshold
    tp = int(np.count_nonzero(hit & y))
    return {
        "count": int(y.size),
        "auc": roc_auc(y, p),
        "log_loss": log_loss(y, p),
        "accuracy": float(np.mean(hit == y)) if y.size else float("nan"),
        "precision": tp / int(np.count_nonzero(hit)) if hit.any() else float("nan"),
        "recall": tp / int(np.count_nonzero(y)) if y.any() else float("nan"),
        "mean_score": float(p.mean()) if y.size else float("nan"),
        "positive_rate": float(y.mean()) if y.size else float("nan"),
    }


CALIBRATION_BINS = 10


def calibration(labels: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """Reliability counts per score bin of width ``1 / bins``: how many predictions, the sum
    of their scores and how many were positive (sums, so windows add up).

    >>> calibration(np.array([0, 1, 1]), np.array([0.05, 0.95, 0.91]), bins=2)
    {'count': [1, 2], 'score_sum': [0.05, 1.86], 'positives': [0, 2]}
    """
    p = np.asarray(scores, dtype=np.float64)
    at = np.minimum((p * bins).astype(np.int64), bins - 1)
    y = np.asarray(labels).astype(np.float64)
    return {
        "count": np.bincount(at, minlength=bins).tolist(),
        "score_sum": [round(v, 6) for v in np.bincount(at, p, minlength=bins).tolist()],
        "positives": np.bincount(at, y, minlength=bins).astype(np.int64).tolist(),
    }
