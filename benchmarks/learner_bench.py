"""The project's learner against the ceiling, µs per event, on pre-hashed mini-batches.

    python benchmarks/learner_bench.py [--events N] [--sizes 1,10,100,1000]

Events of the ``ctr`` stream (seed 2026, 2^20 dimensions), hashed before any clock starts;
for each mini-batch size, ``OnlineLogistic.learn_many`` (``operators/local.py``) and the
ceiling (``benchmarks/ceiling.py``: a minimal sparse FTRL) over the same batches, best of 5
(the two alternate),
with their AUCs (the two must agree: the same math).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ceiling import StandardizedSparseFtrl  # noqa: E402
from connectors.hashing import hash_batch  # noqa: E402
from operators.local import OnlineLogistic  # noqa: E402
from operators.metrics import roc_auc  # noqa: E402
from operators.synthetic import CtrSettings, CtrStream  # noqa: E402

BITS = 20


def batches(events: int, size: int) -> list:
    docs, labels = [], []
    for chunk, _, y in CtrStream(CtrSettings(events=events, seed=2026)).chunks():
        docs += [d["features"] for d in chunk]
        labels.append(y)
    y = np.concatenate(labels).astype(np.float64)
    return [
        (*hash_batch(docs[lo : lo + size], BITS), y[lo : lo + size])
        for lo in range(0, len(docs), size)
    ]


def timed(makers: dict, prepared, repeat: int = 5) -> dict:
    """Best time and AUC of each learner; the learners alternate, so load on a shared
    machine falls on both alike."""
    best = dict.fromkeys(makers, float("inf"))
    auc = {}
    labels = np.concatenate([b[3] for b in prepared])
    for _ in range(repeat):
        for name, make in makers.items():
            learn = make()
            start = time.perf_counter()
            scores = [learn(*b) for b in prepared]
            best[name] = min(best[name], time.perf_counter() - start)
            auc[name] = roc_auc(labels, np.concatenate(scores))
    return {name: (best[name], auc[name]) for name in makers}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--sizes", default="1,10,100,1000")
    parser.add_argument("--json", action="store_true", help="one JSON document at the end")
    args = parser.parse_args(argv)
    rows = []
    print(f"{args.events:,} events of the ctr stream, 2^{BITS} dims, pre-hashed; best of 5")
    print(f"{'batch':>6} {'ours µs/ev':>11} {'ceiling µs/ev':>14} {'ratio':>6} {'AUC ours':>9}"
          f" {'AUC ceiling':>12}")  # fmt: skip
    for size in (int(s) for s in args.sizes.split(",")):
        prepared = batches(args.events, size)
        n = args.events
        makers = {"ours": lambda: OnlineLogistic(BITS).learn_many,
                  "ceiling": lambda: StandardizedSparseFtrl(BITS).learn}  # fmt: skip
        (ours, auc_ours), (ceil, auc_ceil) = timed(makers, prepared).values()
        print(f"{size:>6} {ours / n * 1e6:>11.2f} {ceil / n * 1e6:>14.2f} {ceil / ours:>6.2f}"
              f" {auc_ours:>9.4f} {auc_ceil:>12.4f}", flush=True)  # fmt: skip
        rows.append({"batch": size, "ours_us": ours / n * 1e6, "ceiling_us": ceil / n * 1e6,
                     "ratio": ceil / ours, "auc_ours": auc_ours,
                     "auc_ceiling": auc_ceil})  # fmt: skip
    if args.json:
        print(json.dumps({"events": args.events, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
