"""What staleness alone costs: the numpy learner with its replica held ``LAG`` mini-batches
behind the shard state (each batch scored and its gradient computed on the stale replica, as
an async worker does), on the same stream. No Flink: it isolates the algorithm from the job.

    python benchmarks/staleness.py [--events 20000] [--seed 5] [--lags 0,2,5,10,20] [--batch 100]
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.hashing import hash_batch  # noqa: E402
from connectors.synthetic import CtrSettings, CtrStream  # noqa: E402
from operators.logistic import gradient, predict_proba  # noqa: E402
from operators.metrics import roc_auc  # noqa: E402
from operators.optim import make_optimizer  # noqa: E402
from operators.ps import Replica, ShardServer  # noqa: E402


def run(batches, lag: int, bits: int) -> float:
    server, blocks, replica, in_flight = ShardServer(make_optimizer("ftrl")), {}, Replica(), deque()
    labels, scores = [], []
    for (indptr, indices, values), y in batches:
        s = predict_proba(indptr, indices, values, replica.lookup, bits)
        in_flight.append(server.apply(blocks, *gradient(indptr, indices, values, y, s, bits)))
        while len(in_flight) > lag:
            replica.assign(*in_flight.popleft())
        labels.append(y)
        scores.append(s)
    return roc_auc(np.concatenate(labels).astype(int), np.concatenate(scores))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--bits", type=int, default=20)
    parser.add_argument("--lags", default="0,2,5,10,20")
    parser.add_argument("--batch", type=int, default=100, help="mini-batch size")
    args = parser.parse_args(argv)
    docs = [d for d, _ in CtrStream(CtrSettings(events=args.events, seed=args.seed)).events()]
    batches = [
        (hash_batch([d["features"] for d in docs[i : i + args.batch]], args.bits),
         np.array([d["label"] for d in docs[i : i + args.batch]], float))
        for i in range(0, len(docs), args.batch)
    ]  # fmt: skip
    print(f"{args.events:,} events, seed {args.seed}, mini-batches of {args.batch}, FTRL defaults")
    print("| replica lag (mini-batches) | prequential AUC |\n|---|---|")
    for lag in (int(x) for x in args.lags.split(",")):
        print(f"| {lag} | {run(batches, lag, args.bits):.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
