"""Progressive AUC with default settings on real data sets and the synthetic stream, and the
sweep that chose FTRL's defaults (docs/decisions/0007-standardization-and-warm-up.md).

    python benchmarks/quality.py            # defaults vs River, every data set
    python benchmarks/quality.py --sweep    # the grid over alpha, L1, L2, standardization
    python benchmarks/quality.py --data synthetic --synthetic-events 1000000 --seed 2026
                                            # the bench's stream

Every learner is test-then-train over the same rows in the same order. Ours is the local
engine's learner (``OnlineLogistic``, the job's math) on the job's mini-batches (warm-up
1, 2, 4, ... up to ``--batch-size``); River's ``LogisticRegression()`` and
``StandardScaler() | LogisticRegression()`` run with their defaults, one row at a time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors import datasets  # noqa: E402
from connectors.hashing import hash_batch  # noqa: E402
from operators.local import OnlineLogistic  # noqa: E402
from operators.metrics import roc_auc  # noqa: E402
from operators.ps import DEFAULT_BATCH_SIZE, batch_size_at  # noqa: E402

SYNTHETIC_DEFAULT = {"events": 200_000, "seed": 7}
SYNTHETIC = dict(SYNTHETIC_DEFAULT)  # --synthetic-events, --seed
DEFAULTS = {"alpha": 0.2, "beta": 1.0, "l1": 0.0, "l2": 0.0}


def load(name: str) -> tuple[list[dict], np.ndarray]:
    if name == "synthetic":
        from operators.synthetic import CtrSettings, CtrStream

        docs = [d for d, _ in CtrStream(CtrSettings(**SYNTHETIC)).events()]
        return [d["features"] for d in docs], np.array([d["label"] for d in docs])
    xs, ys = datasets.rows(name)
    return xs, np.array(ys)


def ours(
    xs, ys, bits=20, batch_size=DEFAULT_BATCH_SIZE, warmup=True, standardize=True, **hyper
) -> float:
    """Progressive AUC of the job's learner with the job's mini-batches."""
    hyper = {**DEFAULTS, **hyper}
    model = OnlineLogistic(bits, standardize=standardize, **hyper)
    scores, start = [], 0
    while start < len(ys):
        size = batch_size_at(model.batches_, batch_size, warmup)
        indptr, indices, values = hash_batch(xs[start : start + size], bits)
        scores.append(model.learn_many(indptr, indices, values, ys[start : start + size]))
        start += size
    return roc_auc(ys, np.concatenate(scores))


def river(xs, ys, scaled: bool) -> float:
    """Progressive AUC of River's ``LogisticRegression()`` (after ``StandardScaler()``)."""
    from river import linear_model, preprocessing

    model = linear_model.LogisticRegression()
    if scaled:
        model = preprocessing.StandardScaler() | model
    scores = []
    for x, y in zip(xs, ys.tolist(), strict=True):
        scores.append(model.predict_proba_one(x).get(True, 0.0))
        model.learn_one(x, bool(y))
    return roc_auc(ys, np.array(scores))


def defaults_table(names) -> list[dict]:
    rows = []
    for name in names:
        xs, ys = load(name)
        row = {"data": name, "events": len(ys), "ours": ours(xs, ys)}
        row["ours_no_standardize"] = ours(xs, ys, standardize=False)
        row["ours_no_warmup"] = ours(xs, ys, warmup=False)
        row["ours_old_defaults"] = ours(xs, ys, warmup=False, standardize=False, alpha=0.05)
        if name != "synthetic":
            row["river_lr"] = river(xs, ys, scaled=False)
            row["river_ss_lr"] = river(xs, ys, scaled=True)
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
              flush=True)  # fmt: skip
    return rows


def sweep(names) -> list[dict]:
    grid = itertools.product((0.05, 0.1, 0.2, 0.5), (0.0, 1.0), (0.0, 1.0), (True, False))
    out = []
    data = {name: load(name) for name in names}
    for alpha, l1, l2, standardize in grid:
        row = {"alpha": alpha, "l1": l1, "l2": l2, "standardize": standardize}
        for name, (xs, ys) in data.items():
            row[name] = ours(xs, ys, standardize=standardize, alpha=alpha, l1=l1, l2=l2)
        out.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
              flush=True)  # fmt: skip
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--data", default=",".join((*datasets.NAMES, "synthetic")))
    parser.add_argument("--synthetic-events", type=int, default=SYNTHETIC_DEFAULT["events"])
    parser.add_argument("--seed", type=int, default=SYNTHETIC_DEFAULT["seed"])
    args = parser.parse_args(argv)
    SYNTHETIC.update(events=args.synthetic_events, seed=args.seed)
    names = args.data.split(",")
    started = time.monotonic()
    result = sweep(names) if args.sweep else defaults_table(names)
    kind = "sweep" if args.sweep else "defaults"
    if SYNTHETIC != SYNTHETIC_DEFAULT:
        kind += f"-synthetic-{args.synthetic_events}-s{args.seed}"
    out = Path(__file__).parent / "results" / f"quality-{kind}.json"
    out.write_text(json.dumps({"rows": result, "seconds": time.monotonic() - started}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
