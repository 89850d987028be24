"""How the drift detector's settings trade detection delay against false alarms.

The job's learner (16 hash bits, mini-batches with the warm-up) runs over ten seeds of the
synthetic stream, 130,000 events each, once with ``drift_at=100000`` and once without; for
each setting of ``operators.drift.PageHinkley`` the table counts the alarms on the
stationary streams and before the drift, and the events from the drift to its detection
(``None``: not within the 30,000 that follow); then the alarms in 100,000 chunks of
independent normal noise, where every alarm is false. Run:
``python benchmarks/drift_calibration.py`` (about three minutes)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.hashing import hash_batch  # noqa: E402
from operators.drift import LossDrift, PageHinkley  # noqa: E402
from operators.local import OnlineLogistic  # noqa: E402
from operators.ps import batch_size_at  # noqa: E402
from operators.synthetic import CtrSettings, CtrStream  # noqa: E402

EVENTS, DRIFT_AT, SEEDS = 130_000, 100_000, range(1, 11)


def losses(drift_at: int | None, seed: int, bits: int = 16) -> np.ndarray:
    """Each prediction's log loss, test-then-train."""
    model = OnlineLogistic(bits, "ftrl", alpha=0.2, beta=1.0)
    batch, out = [], []
    for doc, _ in CtrStream(CtrSettings(events=EVENTS, seed=seed, drift_at=drift_at)).events():
        batch.append(doc)
        if len(batch) >= batch_size_at(model.batches_, 1000, True):
            y = np.array([d["label"] for d in batch])
            hashed = hash_batch([d["features"] for d in batch], bits)
            s = np.clip(model.learn_many(*hashed, y), 1e-15, 1 - 1e-15)
            out.append(-(y * np.log(s) + (1 - y) * np.log1p(-s)))
            batch = []
    return np.concatenate(out)


def alarms(x: np.ndarray, **settings) -> list[int]:
    return LossDrift(detector=PageHinkley(**settings)).add(x)


GRID = [
    {"delta": delta, "threshold": threshold, "alpha": alpha}
    for delta in (0.5, 0.75, 1.0)
    for threshold in (4.0, 5.0, 6.0, 8.0)
    for alpha in (0.98, 0.99)
]


def main() -> None:
    data = {seed: (losses(DRIFT_AT, seed), losses(None, seed)) for seed in SEEDS}
    noise = np.random.default_rng(0).normal(0.3, 0.04, 100_000)
    print(
        "| delta | threshold | alpha | false alarms, 20 streams | in 100,000 noise chunks "
        "| events to detection, per seed |"
    )
    print("|---|---|---|---|---|---|")
    for settings in GRID:
        delays, false = [], 0
        for drifted, calm in data.values():
            fired = alarms(drifted, **settings)
            after = [at for at in fired if at > DRIFT_AT]
            first = after[0] - DRIFT_AT if after else None
            delays.append(first if first is not None and first <= EVENTS - DRIFT_AT else None)
            false += len(alarms(calm, **settings)) + len(fired) - len(after)
        detector = PageHinkley(**settings)
        in_noise = sum(detector.add(x) for x in noise)
        print(
            f"| {settings['delta']} | {settings['threshold']} | {settings['alpha']} | {false} "
            f"| {in_noise} | {delays} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
