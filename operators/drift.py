"""Drift detection on the prequential loss: the Page-Hinkley test (Page, Biometrika 1954;
Hinkley, Biometrika 1971), as River's ``drift.PageHinkley`` runs it, for a rise in the mean.

The detector reads the mean log loss of consecutive chunks of ``chunk`` predictions, not
each prediction: one event's loss is mostly near zero and now and then large, and a test on
such values either alarms on a stationary stream or waits long after a change. The mean of
a chunk is close to normal; a rise of ``delta`` or less in it is tolerated, and an alarm
comes when the cumulative rise beyond that passes ``threshold``. The mean it compares with
fades (``alpha`` per chunk), so it follows a learner whose loss falls as it learns. The
defaults were chosen on the synthetic stream (docs/decisions/0014-drift-alerts.md).

>>> ph = PageHinkley()
>>> rng = np.random.default_rng(0)
>>> calm = [ph.add(rng.normal(0.30, 0.02)) for _ in range(400)]   # a stationary loss
>>> any(calm)
False
>>> worse = [ph.add(rng.normal(0.40, 0.02)) for _ in range(20)]   # then it rises by 0.1
>>> worse.index(True) < 10
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from connectors.errors import ConfigError

DRIFT_CHUNK = 500  # predictions per value the detector reads


@dataclass
class PageHinkley:
    """Page-Hinkley for an increase of the mean; picklable (it lives in Flink state)."""

    delta: float = 0.01  # a rise of the chunk mean this small is not a drift
    threshold: float = 0.5  # the cumulative rise beyond ``delta`` that is
    alpha: float = 0.99  # the running mean's fading factor, per chunk
    min_chunks: int = 10  # no alarm before this many chunks since the start or the last alarm
    n: int = 0
    mean: float = 0.0
    weight: float = 0.0
    cum: float = 0.0
    low: float = 0.0

    def __post_init__(self) -> None:
        if self.delta < 0 or self.threshold <= 0 or not 0 < self.alpha <= 1:
            raise ConfigError("Page-Hinkley needs delta >= 0, threshold > 0, 0 < alpha <= 1")

    def add(self, x: float) -> bool:
        """Read one chunk's mean loss; True when it completes a drift (the test restarts)."""
        self.n += 1
        self.weight = self.alpha * self.weight + 1.0
        self.mean += (x - self.mean) / self.weight
        self.cum += x - self.mean - self.delta
        self.low = min(self.low, self.cum)
        if self.n >= self.min_chunks and self.cum - self.low > self.threshold:
            self.reset()
            return True
        return False

    def reset(self) -> None:
        self.n, self.mean, self.weight, self.cum, self.low = 0, 0.0, 0.0, 0.0, 0.0


@dataclass
class LossDrift:
    """Cuts per-prediction losses into chunks of ``chunk`` and feeds their means to a
    ``PageHinkley``; picklable. ``add`` returns, for each drift it detects, the number of
    predictions seen when it fired."""

    chunk: int = DRIFT_CHUNK
    detector: PageHinkley = field(default_factory=PageHinkley)
    seen: int = 0
    partial_sum: float = 0.0
    partial_n: int = 0

    def add(self, losses: np.ndarray) -> list[int]:
        fired = []
        losses = np.asarray(losses, np.float64)
        start = 0
        while start < losses.size:
            take = min(self.chunk - self.partial_n, losses.size - start)
            self.partial_sum += float(losses[start : start + take].sum())
            self.partial_n += take
            start += take
            if self.partial_n == self.chunk:
                if self.detector.add(self.partial_sum / self.chunk):
                    fired.append(self.seen + start)
                self.partial_sum, self.partial_n = 0.0, 0
        self.seen += losses.size
        return fired
