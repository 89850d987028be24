"""What the KKT filter (``--kkt-filter``) saves, and what it costs, beside the
significantly-modified filter (``--update-threshold``).

The job's learner (``operators.local.OnlineLogistic``: the worker's and the shard's
functions, which a sync one-worker job reproduces to 1e-6, see ``tests/flink_jobs``) runs
FTRL with L1, unstandardized, over three seeds of the synthetic stream (200,000 events, 20
hash bits, mini-batches growing to 1,000). For each L1 strength it prints coordinates and
bytes pushed per event (worker to shard: an 8-byte index and an 8-byte gradient per
coordinate), coordinates of model updates per event (shard to worker) and the prequential
AUC, with neither filter, with each, and with both. Run: ``python benchmarks/kkt_bench.py``
(about half a minute)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.hashing import hash_batch  # noqa: E402
from operators.local import OnlineLogistic  # noqa: E402
from operators.metrics import summary  # noqa: E402
from operators.ps import DEFAULT_BATCH_SIZE, batch_size_at  # noqa: E402
from operators.synthetic import CtrSettings, CtrStream  # noqa: E402

EVENTS, BITS, SEEDS, L1S = 200_000, 20, (1, 2, 3), (1.0, 1.5, 2.0)
EPS = 0.005  # the significantly-modified filter's setting in `make bench`
VARIANTS = (("neither", False, 0.0), ("KKT", True, 0.0), (f"eps {EPS}", False, EPS),
            (f"KKT + eps {EPS}", True, EPS))  # fmt: skip


def stream(seed: int) -> list[tuple]:
    """The mini-batches, hashed once: (indptr, indices, values, labels)."""
    docs = [doc for doc, _ in CtrStream(CtrSettings(events=EVENTS, seed=seed)).events()]
    batches, lo, clock = [], 0, 0
    while lo < len(docs):
        part = docs[lo : lo + batch_size_at(clock, DEFAULT_BATCH_SIZE)]
        labels = np.array([d["label"] for d in part], float)
        batches.append((*hash_batch([d["features"] for d in part], BITS), labels))
        lo, clock = lo + len(part), clock + 1
    return batches


def run(batches: list, l1: float, kkt: bool, eps: float) -> dict:
    model = OnlineLogistic(BITS, update_threshold=eps, standardize=False, kkt=kkt, l1=l1)
    scores = [model.learn_many(*b) for b in batches]
    labels = np.concatenate([b[-1] for b in batches])
    return {
        "pushed": model.pushed_ / EVENTS,
        "updates": model.updates_sent_ / EVENTS,
        "auc": summary(labels, np.concatenate(scores))["auc"],
    }


def main() -> None:
    data = {seed: stream(seed) for seed in SEEDS}
    print("| L1 | filter | pushed coordinates / event | pushed bytes / event | update "
          "coordinates / event | AUC, seeds 1-3 | AUC cost (mean) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for l1 in L1S:
        base = None
        for name, kkt, eps in VARIANTS:
            rows = [run(data[seed], l1, kkt, eps) for seed in SEEDS]
            pushed = np.mean([r["pushed"] for r in rows])
            updates = np.mean([r["updates"] for r in rows])
            aucs = [r["auc"] for r in rows]
            base = base or aucs
            cost = np.mean(base) - np.mean(aucs)
            auc = " / ".join(f"{a:.4f}" for a in aucs)
            print(f"| {l1:g} | {name} | {pushed:.3f} | {16 * pushed:.1f} | {updates:.3f} | "
                  f"{auc} | {cost:+.4f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
