"""Drift detection on the prequential loss: the Page-Hinkley test (Page, Biometrika 1954;
Hinkley, Biometrika 1971) for a rise in the mean, on standardized values.

The detector reads the mean log loss of consecutive chunks of ``chunk`` predictions, not
each prediction: one event's loss is mostly near zero and now and then large, while a
chunk's mean is close to normal. Each mean is standardized by the running mean and standard
deviation of the chunk means before it (both fading by ``alpha`` per chunk, so they follow a
learner whose loss falls as it learns, and a job whose staleness makes its loss noisier);
the test adds up how far each lies above the mean beyond ``delta`` standard deviations and
alarms when that sum passes ``threshold`` (the cumulative sum is Page-Hinkley's ``m_T -
M_T``). The first ``min_chunks`` chunks after the start or an alarm only estimate the mean
and deviation. The defaults were chosen on the synthetic stream
(docs/decisions/0014-drift-alerts.md).

>>> ph = PageHinkley()
>>> rng = np.random.default_rng(0)
>>> calm = [ph.add(rng.normal(0.30, 0.04)) for _ in range(2_000)]   # a stationary loss
>>> any(calm)
False
>>> worse = [ph.add(rng.normal(0.40, 0.04)) for _ in range(20)]    # then it rises by 0.1
>>> worse.index(True) < 10
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from connectors.errors import ConfigError

DRIFT_CHUNK = 500  # predictions per value the detector reads
DRIFT_BOOST = 4.0  # --on-drift boost: step sizes raised this many times (decision 0020)
# what ``train --on-drift`` did about a drift, as the summary and the report say it
DRIFT_DONE = {"reset": "; the model restarted from zero",
              "boost": f"; the step sizes were raised {DRIFT_BOOST:g}x"}  # fmt: skip


@dataclass
class PageHinkley:
    """Page-Hinkley for an increase of the mean, in standard deviations; picklable (it lives
    in Flink state)."""

    delta: float = 0.75  # a rise of this many standard deviations or less is not a drift
    threshold: float = 6.0  # the cumulative rise beyond ``delta`` that is
    alpha: float = 0.98  # the running mean's and deviation's fading factor, per chunk
    min_chunks: int = 20  # chunks that only estimate them, after the start or an alarm
    n: int = 0
    weight: float = 0.0
    mean: float = 0.0
    spread: float = 0.0  # the faded sum of squared deviations
    cum: float = 0.0

    def __post_init__(self) -> None:
        if self.delta < 0 or self.threshold <= 0 or not 0 < self.alpha < 1:
            raise ConfigError("Page-Hinkley needs delta >= 0, threshold > 0, 0 < alpha < 1")

    def add(self, x: float) -> bool:
        """Read one chunk's mean loss; True when it completes a drift (the test restarts)."""
        self.n += 1
        if self.n > self.min_chunks:
            sd = math.sqrt(self.spread / self.weight)
            z = (x - self.mean) / sd if sd > 0 else 0.0
            self.cum = max(0.0, self.cum + z - self.delta)
            if self.cum > self.threshold:
                self.reset()
                return True
        self.weight = self.alpha * self.weight + 1.0
        d = x - self.mean
        self.mean += d / self.weight
        self.spread = self.alpha * self.spread + d * (x - self.mean)
        return False

    def reset(self) -> None:
        self.n, self.weight, self.mean, self.spread, self.cum = 0, 0.0, 0.0, 0.0, 0.0


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
