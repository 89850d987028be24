"""What ``train --on-drift`` buys after a drift: alert only, reset, or boost.

The job's learner as the local engine runs it (``operators.local.OnlineLogistic``: the
worker's detector and the shard's action, which a sync one-worker job reproduces to 1e-6,
see ``tests/flink_jobs/test_train.py``), 16 hash bits, mini-batches growing to 1,000, over
ten seeds of the synthetic stream with ``drift_at=100000`` (140,000 events). For each action
it prints the AUC of the 20,000 predictions before the drift and of the 5,000-event spans
after the detection, averaged over the seeds where the drift was detected, and how many
predictions after the detection it took to be back within 0.01 of the pre-drift AUC (over
a sliding 5,000; ``-``: not within the 40,000 that follow). Run:
``python benchmarks/drift_actions.py`` (about half a minute)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.hashing import hash_batch  # noqa: E402
from operators.local import OnlineLogistic  # noqa: E402
from operators.metrics import roc_auc  # noqa: E402
from operators.ps import batch_size_at  # noqa: E402
from operators.synthetic import CtrSettings, CtrStream  # noqa: E402

EVENTS, DRIFT_AT, BITS, SEEDS = 140_000, 100_000, 16, range(1, 11)
SPAN, AFTER = 5_000, 40_000
ACTIONS = ("alert", "reset", "boost")


def stream(seed: int) -> list[dict]:
    settings = CtrSettings(events=EVENTS, seed=seed, drift_at=DRIFT_AT)
    return [doc for doc, _ in CtrStream(settings).events()]


def run(docs: list, action: str) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Scores, labels, and the prediction after which the first drift was detected (with
    ``alert`` nothing acts, and it is ``None``: up to that alarm every action learns the
    same, so the others' is its). Mini-batches are cut as the local engine cuts them: their
    warm-up starts again after an action (``OnlineLogistic.age_``)."""
    model, scores, labels, lo, detected = OnlineLogistic(BITS, on_drift=action), [], [], 0, None
    while lo < len(docs):
        part = docs[lo : lo + batch_size_at(model.age_, 1000)]
        y = np.array([d["label"] for d in part], float)
        scores.append(model.learn_many(*hash_batch([d["features"] for d in part], BITS), y))
        labels.append(y)
        lo += len(part)
        if detected is None and model.drifts_:
            detected = lo
    return np.concatenate(scores), np.concatenate(labels), detected


def recovered(y, s, detected: int, target: float) -> int | None:
    for start in range(detected, min(detected + AFTER, y.size) - SPAN + 1, 500):
        if roc_auc(y[start : start + SPAN], s[start : start + SPAN]) >= target - 0.01:
            return start + SPAN - detected
    return None


def main() -> None:
    rows = {a: [] for a in ACTIONS}
    for seed in SEEDS:
        docs, at = stream(seed), None
        for action in ("boost", "reset", "alert"):
            s, y, detected = run(docs, action)
            at = detected or at
            if at is None:
                continue
            pre = roc_auc(y[DRIFT_AT - 20_000 : DRIFT_AT], s[DRIFT_AT - 20_000 : DRIFT_AT])
            spans = [roc_auc(y[at + k : at + k + SPAN], s[at + k : at + k + SPAN])
                     for k in range(0, 20_000, SPAN)]  # fmt: skip
            rows[action].append((seed, at, pre, spans, recovered(y, s, at, pre)))
        print(f"seed {seed}: " + ", ".join(
            f"{a} {rows[a][-1][4] if rows[a] and rows[a][-1][0] == seed else 'no drift'}"
            for a in ACTIONS), flush=True)  # fmt: skip
    print("| action | pre-drift AUC | after detection: 0-5k | 5-10k | 10-15k | 15-20k | "
          "predictions to within 0.01 of pre-drift, seeds 1-10 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for action in ACTIONS:
        r = rows[action]
        spans = np.mean([x[3] for x in r], axis=0)
        back = " ".join(f"{x[4]:,}" if x[4] is not None else "-" for x in r)
        print(
            f"| {action} | {np.mean([x[2] for x in r]):.4f} | "
            + " | ".join(f"{v:.4f}" for v in spans)
            + f" | {back} |"
        )


if __name__ == "__main__":
    main()
