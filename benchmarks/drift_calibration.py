"""How the drift detector's settings trade detection delay against false alarms.

The job's learner (16 hash bits, mini-batches with the warm-up) runs over ten seeds of the
synthetic stream, 130,000 events each, once with ``drift_at=100000`` and once without; for
each setting of ``operators.drift.PageHinkley`` the table counts the alarms on the
stationary streams and before the drift, and the events from the drift to its detection
(``None``: not within the 30,000 that follow). Run: ``python benchmarks/drift_calibration.py``
(about two minutes)."""

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


def main() -> None:
    data = {seed: (losses(DRIFT_AT, seed), losses(None, seed)) for seed in SEEDS}
    print("| delta | threshold | alpha | false alarms | events to detection, per seed |")
    print("|---|---|---|---|---|")
    for delta in (0.01, 0.02, 0.03):
        for threshold in (0.3, 0.5, 0.8):
            for alpha in (0.95, 0.99):
                settings = {"delta": delta, "threshold": threshold, "alpha": alpha}
                delays, false = [], 0
                for drifted, calm in data.values():
                    fired = alarms(drifted, **settings)
                    after = [at for at in fired if at > DRIFT_AT]
                    delays.append(after[0] - DRIFT_AT if after else None)
                    false += len(alarms(calm, **settings)) + len(fired) - len(after)
                print(f"| {delta} | {threshold} | {alpha} | {false} | {delays} |", flush=True)


if __name__ == "__main__":
    main()
