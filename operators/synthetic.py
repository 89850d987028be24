"""A synthetic click-through stream drawn from a known sparse logistic model.

Every event's click probability comes from a true model the generator knows, so its own AUC
and log loss are the ceiling any learner can reach on the stream. Reproducible from the seed:
the same settings give the same bytes, whichever sink they go to.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from connectors.errors import ConfigError
from operators.metrics import log_loss, roc_auc

# field -> (cardinality, Zipf exponent of its value frequencies; 0 = uniform)
CATEGORICAL = {
    "site": (2000, 1.1),
    "app": (1500, 1.1),
    "domain": (800, 1.0),
    "ad_id": (5000, 1.2),
    "advertiser": (300, 0.9),
    "campaign": (1000, 1.0),
    "category": (30, 0.6),
    "device_type": (5, 1.5),
    "os": (6, 1.2),
    "browser": (8, 1.0),
    "country": (60, 1.3),
    "banner_pos": (7, 1.0),
    "connection": (4, 0.0),
}
NUMERIC = ("hour", "price", "position", "session_depth")
START_TS_MS = 1763800000000
TRUTH_WINDOW = 10_000
CHUNK = 10_000


@dataclass(frozen=True)
class CtrSettings:
    """Generator settings; with the seed they determine the stream exactly."""

    events: int
    seed: int = 42
    base_rate: float = 0.10
    drift_at: int | None = None
    drift_fraction: float = 0.5
    nonzero_fraction: float = 0.35
    weight_scale: float = 0.7
    task: str = "ctr"
    start_ts_ms: int = START_TS_MS
    step_ms: int = 10

    def __post_init__(self) -> None:
        if self.events < 0:
            raise ConfigError(f"events must be >= 0, got {self.events}")
        if not 0.0 < self.base_rate < 1.0:
            raise ConfigError(f"base_rate must be in (0, 1), got {self.base_rate}")
        if self.drift_at is not None and self.drift_at < 0:
            raise ConfigError(f"drift_at must be >= 0, got {self.drift_at}")


def _zipf_probs(card: int, exponent: float) -> np.ndarray:
    p = 1.0 / np.arange(1, card + 1) ** exponent
    return p / p.sum()


def _draw_weights(rng: np.random.Generator, s: CtrSettings) -> dict[str, np.ndarray]:
    weights = {}
    for name, (card, _) in CATEGORICAL.items():
        w = rng.normal(0.0, s.weight_scale, card)
        w[rng.random(card) >= s.nonzero_fraction] = 0.0
        weights[name] = w
    weights["_numeric"] = np.array([0.03, -0.15, -0.2, 0.05])  # hour, price, position, depth
    return weights


class CtrStream:
    """Draws events in chunks; ``truth`` holds the true probabilities of what was drawn.

    Examples
    --------
    >>> stream = CtrStream(CtrSettings(events=3, seed=1))
    >>> [doc["event_id"] for doc, _ in stream.events()]
    ['e-000000000', 'e-000000001', 'e-000000002']
    """

    def __init__(self, settings: CtrSettings):
        self.settings = settings
        rng = np.random.default_rng(settings.seed)
        self._probs = {n: _zipf_probs(c, e) for n, (c, e) in CATEGORICAL.items()}
        self._weights = _draw_weights(rng, settings)
        self._drifted = {n: w.copy() for n, w in self._weights.items()}
        for name in CATEGORICAL:
            w = self._drifted[name]
            flip = rng.random(w.size) < settings.drift_fraction
            w[flip] = -w[flip] + rng.normal(0, 0.5 * settings.weight_scale, int(flip.sum()))
        self._rng = rng
        self.bias = self._calibrate_bias(np.random.default_rng(settings.seed + 1), self._weights)
        self.drift_bias = self._calibrate_bias(
            np.random.default_rng(settings.seed + 1), self._drifted
        )

    def _features(self, rng: np.random.Generator, n: int) -> tuple[dict, np.ndarray]:
        cats = {name: rng.choice(p.size, size=n, p=p) for name, p in self._probs.items()}
        num = np.column_stack(
            [
                rng.integers(0, 24, n).astype(np.float64),
                np.round(rng.lognormal(0.5, 0.7, n), 2),
                rng.integers(1, 11, n).astype(np.float64),
                rng.poisson(3.0, n).astype(np.float64),
            ]
        )
        return cats, num

    def _logit(self, cats: dict, num: np.ndarray, weights: dict) -> np.ndarray:
        z = num @ weights["_numeric"]
        for name, idx in cats.items():
            z = z + weights[name][idx]
        return z

    def _calibrate_bias(self, rng: np.random.Generator, weights: dict) -> float:
        z = self._logit(*self._features(rng, 20_000), weights)
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            rate = np.mean(1 / (1 + np.exp(-(z + mid))))
            lo, hi = (mid, hi) if rate < self.settings.base_rate else (lo, mid)
        return (lo + hi) / 2

    def chunks(self) -> Iterator[tuple[list[dict], np.ndarray, np.ndarray]]:
        """Yield ``(events, true probabilities, labels)`` in chunks of up to 10,000."""
        s = self.settings
        for start in range(0, s.events, CHUNK):
            n = min(CHUNK, s.events - start)
            cats, num = self._features(self._rng, n)
            z = self._logit(cats, num, self._weights) + self.bias
            if s.drift_at is not None and start + n > s.drift_at:
                cut = max(0, s.drift_at - start)
                drifted = {k: v[cut:] for k, v in cats.items()}
                z[cut:] = self._logit(drifted, num[cut:], self._drifted) + self.drift_bias
            p = 1 / (1 + np.exp(-z))
            labels = (self._rng.random(n) < p).astype(np.int64)
            yield self._documents(start, cats, num, labels), p, labels

    def _documents(self, start: int, cats: dict, num: np.ndarray, labels: np.ndarray) -> list:
        s = self.settings
        names = list(cats)
        columns = [[f"{name[:2]}{v:04x}" for v in cats[name].tolist()] for name in names]
        numeric = num.tolist()
        docs = []
        for i in range(len(labels)):
            features = {name: col[i] for name, col in zip(names, columns, strict=True)}
            hour, price, position, depth = numeric[i]
            features.update(
                hour=int(hour), price=price, position=int(position), session_depth=int(depth)
            )
            docs.append(
                {
                    "event_id": f"e-{start + i:09d}",
                    "ts": s.start_ts_ms + (start + i) * s.step_ms,
                    "task": s.task,
                    "label": int(labels[i]),
                    "features": features,
                }
            )
        return docs

    def events(self) -> Iterator[tuple[dict, float]]:
        for docs, p, _ in self.chunks():
            yield from zip(docs, p.tolist(), strict=True)


def truth_report(settings: CtrSettings, probs: np.ndarray, labels: np.ndarray) -> dict:
    """The true model's own AUC and log loss, overall and per window of 10,000 events."""
    windows = []
    for start in range(0, labels.size, TRUTH_WINDOW):
        y, p = labels[start : start + TRUTH_WINDOW], probs[start : start + TRUTH_WINDOW]
        windows.append(
            {
                "start": start,
                "end": start + y.size,
                "auc": roc_auc(y, p),
                "log_loss": log_loss(y, p),
                "positive_rate": float(y.mean()),
            }
        )
    return {
        "scenario": "ctr",
        "settings": asdict(settings),
        "events": int(labels.size),
        "positive_rate": float(labels.mean()) if labels.size else None,
        "auc": roc_auc(labels, probs) if labels.size else None,
        "log_loss": log_loss(labels, probs) if labels.size else None,
        "window": TRUTH_WINDOW,
        "windows": windows,
    }


def encode(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


# ---- deliberately malformed records, for tests and the demo ---------------------------------

# the last four each stopped a job once (a poison record): nesting that overflowed the
# parser's recursion, an integer too large to format, a task naming a path, a lone surrogate
MALFORMED_KINDS = ("bad_json", "wrong_type", "nan", "missing_field", "oversized",
                   "deep", "huge_int", "bad_task", "surrogate")  # fmt: skip
EXPECTED_REASON = {
    "bad_json": "invalid JSON",
    "wrong_type": "field 'label' must be 0 or 1",
    "nan": "non-finite number NaN",
    "missing_field": "missing field 'features'",
    "oversized": "record too large",
    "deep": "nested too deeply",
    "huge_int": "is out of range",
    "bad_task": "field 'task' must be letters",
    "surrogate": "lone UTF-16 surrogate",
}
DEEP_LEVELS = 3000  # about 18 KB, under the record size limit


def corrupt(doc: dict, kind: str) -> bytes:
    """Turn a good event into a bad record of the given kind (see ``EXPECTED_REASON``)."""
    if kind == "bad_json":
        return encode(doc)[:-7]
    if kind == "wrong_type":
        return encode({**doc, "label": "yes"})
    if kind == "nan":
        return encode({**doc, "features": {**doc["features"], "price": 1.5}}).replace(
            b'"price":1.5', b'"price":NaN'
        )
    if kind == "missing_field":
        return encode({k: v for k, v in doc.items() if k != "features"})
    if kind == "oversized":
        return encode({**doc, "features": {**doc["features"], "blob": "x" * 70_000}})
    if kind == "deep":
        nested = b'{"a":' * DEEP_LEVELS + b"1" + b"}" * DEEP_LEVELS
        return encode({**doc, "features": {"x": 0.5}}).replace(b"0.5", nested)
    if kind == "huge_int":
        return encode({**doc, "features": {"x": 0.5}}).replace(b"0.5", b"9" * 400)
    if kind == "bad_task":
        return encode({**doc, "task": "../../escaped"})
    if kind == "surrogate":
        return encode({**doc, "features": {"x": "ab"}}).replace(b'"ab"', b'"\\ud800"')
    raise ConfigError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
