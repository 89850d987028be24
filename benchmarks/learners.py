"""One single-process contender of the benchmark, run in its own process (so its peak memory
is its own) over a JSON-lines file of raw events, as they would come off Kafka.

    python benchmarks/learners.py NAME --data FILE [--bits 20] [--batch 100]

Prints one JSON document: events/s, progressive metrics, peak RSS. Contenders:

- ``numpy-ceiling``: streamshard's numpy learner (FTRL) on mini-batches decoded and hashed
  before the clock starts (the ceiling for this machine's Python);
- ``numpy-loop``: the same learner in a hand-rolled loop that decodes and hashes each event;
- ``river``: River ``linear_model.LogisticRegression()`` (defaults: SGD lr 0.01, no L2),
  ``predict_proba_one`` then ``learn_one`` per event, decoding and hashing each event itself;
- ``sklearn``: ``SGDClassifier(loss="log_loss")`` (defaults) ``partial_fit`` on mini-batches
  of hashed CSR rows, each batch scored before it is learnt;
- ``vw``: Vowpal Wabbit (``--loss_function logistic --link logistic -b BITS``, its own
  hashing of ``name=value`` features), predict then learn per event.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import peak_rss_mib  # noqa: E402
from connectors.events import decode_event  # noqa: E402
from connectors.hashing import hash_batch, hash_features  # noqa: E402
from operators.local import OnlineLogistic  # noqa: E402
from operators.metrics import summary  # noqa: E402


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def read_lines(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        return f.read().splitlines()


def numpy_ceiling(lines, bits, batch):
    batches = []
    for i in range(0, len(lines), batch):
        events = [decode_event(v) for v in lines[i : i + batch]]
        batches.append((hash_batch([e.features for e in events], bits), [e.label for e in events]))
    model = OnlineLogistic(bits)
    labels, scores = [], []
    start = time.perf_counter()
    for (indptr, indices, values), y in batches:
        scores.append(model.learn_many(indptr, indices, values, y))
        labels += y
    return time.perf_counter() - start, labels, np.concatenate(scores)


def numpy_loop(lines, bits, batch):
    model = OnlineLogistic(bits)
    labels, scores = [], []
    start = time.perf_counter()
    for i in range(0, len(lines), batch):
        events = [decode_event(v) for v in lines[i : i + batch]]
        y = [e.label for e in events]
        indptr, indices, values = hash_batch([e.features for e in events], bits)
        scores.append(model.learn_many(indptr, indices, values, y))
        labels += y
    return time.perf_counter() - start, labels, np.concatenate(scores)


def river(lines, bits, batch):
    from river import linear_model

    model = linear_model.LogisticRegression()
    labels, scores = [], []
    start = time.perf_counter()
    for value in lines:
        event = decode_event(value)
        idx, vals = hash_features(event.features, bits)
        x = dict(zip(idx.tolist(), vals.tolist(), strict=True))
        scores.append(model.predict_proba_one(x)[True])
        model.learn_one(x, bool(event.label))
        labels.append(event.label)
    return time.perf_counter() - start, labels, np.array(scores)


def sklearn(lines, bits, batch):
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import SGDClassifier

    model = SGDClassifier(loss="log_loss")
    dim = 1 << bits
    labels, scores = [], []
    start = time.perf_counter()
    for i in range(0, len(lines), batch):
        events = [decode_event(v) for v in lines[i : i + batch]]
        y = np.array([e.label for e in events])
        indptr, indices, values = hash_batch([e.features for e in events], bits)
        x = csr_matrix((values, indices, indptr), shape=(len(events), dim))
        if hasattr(model, "coef_"):
            scores.append(model.predict_proba(x)[:, 1])
        else:
            scores.append(np.full(len(events), 0.5))
        model.partial_fit(x, y, classes=np.array([0, 1]))
        labels += y.tolist()
    return time.perf_counter() - start, labels, np.concatenate(scores)


def _vw_line(event) -> str:
    parts = []
    for name, value in event.features.items():
        name = name.replace(" ", "_").replace(":", "_").replace("|", "_")
        if isinstance(value, str):
            parts.append(f"{name}={value.replace(' ', '_').replace(':', '_').replace('|', '_')}")
        else:
            parts.append(f"{name}:{value}")
    label = 1 if event.label else -1
    return f"{label} |f {' '.join(parts)}"


def vw(lines, bits, batch):
    import vowpalwabbit

    model = vowpalwabbit.Workspace(f"--loss_function logistic --link logistic -b {bits} --quiet")
    labels, scores = [], []
    start = time.perf_counter()
    for value in lines:
        event = decode_event(value)
        example = model.parse(_vw_line(event))
        scores.append(model.predict(example))
        model.learn(example)
        model.finish_example(example)
        labels.append(event.label)
    elapsed = time.perf_counter() - start
    model.finish()
    return elapsed, labels, np.array(scores)


CONTENDERS = {
    "numpy-ceiling": numpy_ceiling,
    "numpy-loop": numpy_loop,
    "river": river,
    "sklearn": sklearn,
    "vw": vw,
}


def metrics(labels, scores) -> dict:
    y = np.asarray(labels, np.int64)
    s = np.clip(np.asarray(scores, float), 0.0, 1.0)
    tail = max(1, y.size // 10)
    whole, last = summary(y, s), summary(y[-tail:], s[-tail:])
    return {
        "auc": whole["auc"],
        "log_loss": whole["log_loss"],
        "auc_last10": last["auc"],
        "log_loss_last10": last["log_loss"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", choices=sorted(CONTENDERS))
    parser.add_argument("--data", required=True)
    parser.add_argument("--bits", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--limit", type=int, help="only the first N events")
    args = parser.parse_args(argv)
    lines = read_lines(args.data)[: args.limit]
    loaded = current_rss_mib()  # the raw stream itself, held by every contender alike
    elapsed, labels, scores = CONTENDERS[args.name](lines, args.bits, args.batch)
    doc = {
        "name": args.name,
        "events": len(labels),
        "seconds": elapsed,
        "events_per_s": len(labels) / elapsed,
        "peak_rss_mib": peak_rss_mib(),
        "learner_mib": peak_rss_mib() - loaded,
        **metrics(labels, scores),
    }
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
