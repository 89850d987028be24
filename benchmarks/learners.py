"""One single-process contender of the benchmark, run in its own process (so its peak memory
is its own) over a JSON-lines file of raw events, as they would come off Kafka.

    python benchmarks/learners.py NAME --data FILE [--bits 20] [--batch 100]

Prints one JSON document: events/s, progressive metrics, peak RSS, the settings. Every
contender is test-then-train (each event scored before it is learnt). Contenders:

- ``ceiling``: a minimal sparse FTRL (``benchmarks/ceiling.py``) on mini-batches decoded and
  hashed before the clock starts: the fastest honest code for the math;
- ``ceiling-orjson``: the same with orjson decoding (no validation) and one scikit-learn
  ``FeatureHasher`` call per mini-batch inside the clock;
- ``learner``: streamshard's ``OnlineLogistic`` on the ceiling's pre-hashed mini-batches;
- ``numpy-loop``: streamshard's strict decoder, batch hasher and learner in one loop;
- ``river``: River ``LogisticRegression()`` (defaults: SGD lr 0.01), its own dict idiom
  (``{"name=value": 1, "name": number}``, no hashing), orjson decoding,
  ``predict_proba_one`` then ``learn_one``; ``river-ftrl`` the same with
  ``optim.FTRLProximal()`` (River's defaults);
- ``sklearn``: ``SGDClassifier(loss="log_loss")`` (defaults) ``partial_fit`` on mini-batches
  of 1,000 ``FeatureHasher`` rows, each batch scored before it is learnt, orjson decoding;
- ``vw``: Vowpal Wabbit with its defaults (adaptive, normalized, invariant updates) and
  ``--loss_function logistic --link logistic -b BITS``, its own text format and hashing,
  orjson decoding, predict then learn per event.
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

from benchmarks.ceiling import StandardizedSparseFtrl  # noqa: E402
from benchmarks.common import peak_rss_mib  # noqa: E402
from connectors.events import decode_event  # noqa: E402
from connectors.hashing import hash_batch  # noqa: E402
from operators.local import OnlineLogistic  # noqa: E402
from operators.metrics import summary  # noqa: E402


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def read_lines(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        return f.read().splitlines()


def _prehashed(lines, bits, batch):
    batches = []
    for i in range(0, len(lines), batch):
        events = [decode_event(v) for v in lines[i : i + batch]]
        y = np.array([e.label for e in events], np.float64)
        batches.append((*hash_batch([e.features for e in events], bits), y))
    return batches


def _timed_batches(learn, batches):
    labels, scores = [], []
    start = time.perf_counter()
    for indptr, indices, values, y in batches:
        scores.append(learn(indptr, indices, values, y))
        labels.append(y)
    return time.perf_counter() - start, np.concatenate(labels), np.concatenate(scores)


def ceiling(lines, bits, batch):
    return _timed_batches(StandardizedSparseFtrl(bits).learn, _prehashed(lines, bits, batch))


def ceiling_orjson(lines, bits, batch):
    import orjson

    model = StandardizedSparseFtrl(bits)
    labels, scores = [], []
    start = time.perf_counter()
    for i in range(0, len(lines), batch):
        docs = [orjson.loads(v) for v in lines[i : i + batch]]
        y = np.array([d["label"] for d in docs], np.float64)
        indptr, indices, values = hash_batch([d["features"] for d in docs], bits)
        scores.append(model.learn(indptr, indices, values, y))
        labels.append(y)
    return time.perf_counter() - start, np.concatenate(labels), np.concatenate(scores)


def learner(lines, bits, batch):
    return _timed_batches(OnlineLogistic(bits).learn_many, _prehashed(lines, bits, batch))


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


def _river_dict(features: dict) -> dict:
    """River's idiom: a categorical value is the key ``name=value`` with value 1."""
    return {f"{k}={v}" if isinstance(v, str) else k: 1 if isinstance(v, str) else v
            for k, v in features.items()}  # fmt: skip


def _river(model, lines):
    import orjson

    labels, scores = [], []
    start = time.perf_counter()
    for value in lines:
        doc = orjson.loads(value)
        x = _river_dict(doc["features"])
        scores.append(model.predict_proba_one(x).get(True, 0.0))
        model.learn_one(x, bool(doc["label"]))
        labels.append(doc["label"])
    return time.perf_counter() - start, labels, np.array(scores)


def river(lines, bits, batch):
    from river import linear_model

    return _river(linear_model.LogisticRegression(), lines)


def river_ftrl(lines, bits, batch):
    from river import linear_model, optim

    return _river(linear_model.LogisticRegression(optimizer=optim.FTRLProximal()), lines)


def sklearn(lines, bits, batch):
    import orjson
    from sklearn.feature_extraction import FeatureHasher
    from sklearn.linear_model import SGDClassifier

    batch = SKLEARN_BATCH
    model = SGDClassifier(loss="log_loss")
    hasher = FeatureHasher(n_features=1 << bits, input_type="dict")
    labels, scores = [], []
    start = time.perf_counter()
    for i in range(0, len(lines), batch):
        docs = [orjson.loads(v) for v in lines[i : i + batch]]
        y = np.array([d["label"] for d in docs])
        x = hasher.transform([d["features"] for d in docs])
        if hasattr(model, "coef_"):
            scores.append(model.predict_proba(x)[:, 1])
        else:
            scores.append(np.full(len(docs), 0.5))
        model.partial_fit(x, y, classes=np.array([0, 1]))
        labels += y.tolist()
    return time.perf_counter() - start, labels, np.concatenate(scores)


def _vw_line(doc: dict) -> str:
    parts = []
    for name, value in doc["features"].items():
        name = name.replace(" ", "_").replace(":", "_").replace("|", "_")
        if isinstance(value, str):
            parts.append(f"{name}={value.replace(' ', '_').replace(':', '_').replace('|', '_')}")
        else:
            parts.append(f"{name}:{value}")
    label = 1 if doc["label"] else -1
    return f"{label} |f {' '.join(parts)}"


def vw(lines, bits, batch):
    import orjson
    import vowpalwabbit

    model = vowpalwabbit.Workspace(SETTINGS["vw"].format(bits=bits))
    labels, scores = [], []
    start = time.perf_counter()
    for value in lines:
        doc = orjson.loads(value)
        example = model.parse(_vw_line(doc))
        scores.append(model.predict(example))
        model.learn(example)
        model.finish_example(example)
        labels.append(doc["label"])
    elapsed = time.perf_counter() - start
    model.finish()
    return elapsed, labels, np.array(scores)


CONTENDERS = {
    "ceiling": ceiling,
    "ceiling-orjson": ceiling_orjson,
    "learner": learner,
    "numpy-loop": numpy_loop,
    "river": river,
    "river-ftrl": river_ftrl,
    "sklearn": sklearn,
    "vw": vw,
}
SKLEARN_BATCH = 1000
SETTINGS = {
    "ceiling": "sparse FTRL alpha 0.2 beta 1, standardized, batches of {batch}, pre-decoded, "
    "pre-hashed",
    "ceiling-orjson": "the ceiling + orjson.loads + one FeatureHasher call per batch",
    "learner": "OnlineLogistic FTRL alpha 0.2 beta 1, standardized, batches of {batch}, pre-hashed",
    "numpy-loop": "decode_event (orjson, strict) + hash_batch + OnlineLogistic, batches of {batch}",
    "river": "LogisticRegression() (SGD lr 0.01), dicts name=value, orjson, per event",
    "river-ftrl": "LogisticRegression(optimizer=optim.FTRLProximal()), dicts, orjson, per event",
    "sklearn": f"SGDClassifier(loss='log_loss') partial_fit, batches of {SKLEARN_BATCH}, "
    "FeatureHasher, orjson",
    "vw": "--loss_function logistic --link logistic -b {bits} --quiet",
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
        "settings": SETTINGS[args.name].format(bits=args.bits, batch=args.batch),
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
