"""What staleness alone costs, and what read-my-writes buys back: the numpy learner with its
workers' replicas held ``LAG`` mini-batches behind the shard state (each batch scored and its
gradient computed on the stale replica, as an async worker does), on the same stream. No
Flink: it isolates the algorithm from the job.

``--workers W`` deals the mini-batches round-robin to W workers; with ``--read-my-writes`` each
worker's replica is ``operators.replica.StateReplica`` (the job's own class): the shards' state as
last received plus the worker's own pushes not yet reflected, so a worker misses only the
other workers' in-flight mini-batches.

    python benchmarks/staleness.py [--events 20000] [--seed 5] [--lags 0,2,5,10,20] [--batch 100]
                                   [--workers 1] [--read-my-writes]
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.hashing import hash_batch  # noqa: E402
from operators.dense_range import DenseRange
from operators.logistic import dimension, gradient, predict_proba  # noqa: E402
from operators.metrics import roc_auc  # noqa: E402
from operators.optim import make_optimizer  # noqa: E402
from operators.replica import StateReplica
from operators.shard_server import ShardServer  # noqa: E402
from operators.synthetic import CtrSettings, CtrStream  # noqa: E402


def run(batches, lag: int, bits: int, workers: int = 1, read_my_writes: bool = False) -> float:
    """Prequential AUC; an update reaches the replicas ``lag`` pushes after it was made."""
    opt, dim = make_optimizer("ftrl"), dimension(bits)
    server = ShardServer(opt, state_updates=read_my_writes)
    shard = DenseRange((*opt.state_names, "sent"), 0, dim)
    if read_my_writes:
        replicas = [StateReplica(opt, DenseRange(opt.state_names, 0, dim)) for _ in range(workers)]
    else:
        replicas = [DenseRange(("w",), 0, dim)] * workers  # one copy: they all see the same
    clocks, in_flight, labels, scores = [-1] * workers, deque(), [], []
    for k, ((indptr, indices, values), y) in enumerate(batches):
        me = k % workers
        s = predict_proba(indptr, indices, values, replicas[me].lookup, bits)
        idx, g = gradient(indptr, indices, values, y, s, bits)
        clocks[me] += 1
        changed, w = server.apply_dense(shard, idx, g)
        state = {n: shard.arrays[n][changed] for n in opt.state_names}
        in_flight.append((list(clocks), changed, w, state))
        if read_my_writes:
            replicas[me].push(0, clocks[me], idx, g)
        while len(in_flight) > lag:
            vector_clock, changed, w, state = in_flight.popleft()
            if read_my_writes:
                for worker, replica in enumerate(replicas):
                    replica.update(0, vector_clock[worker], changed, state)
            else:
                replicas[0].assign(changed, w)
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
    parser.add_argument("--workers", type=int, default=1, help="workers, dealt batches in turn")
    parser.add_argument("--read-my-writes", action="store_true", help="as the job does")
    args = parser.parse_args(argv)
    docs = [d for d, _ in CtrStream(CtrSettings(events=args.events, seed=args.seed)).events()]
    batches = [
        (hash_batch([d["features"] for d in docs[i : i + args.batch]], args.bits),
         np.array([d["label"] for d in docs[i : i + args.batch]], float))
        for i in range(0, len(docs), args.batch)
    ]  # fmt: skip
    print(
        f"{args.events:,} events, seed {args.seed}, mini-batches of {args.batch}, FTRL defaults, "
        f"{args.workers} worker(s), read-my-writes {'on' if args.read_my_writes else 'off'}"
    )
    print("| replica lag (mini-batches) | prequential AUC |\n|---|---|")
    for lag in (int(x) for x in args.lags.split(",")):
        auc = run(batches, lag, args.bits, args.workers, args.read_my_writes)
        print(f"| {lag} | {auc:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
