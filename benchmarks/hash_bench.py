"""Feature hashing: event by event (memoized MurmurHash3 per token, what ``serve`` does)
against a whole batch in one ``FeatureHasher`` call (what the training job does with each
gathered batch); then the parser's whole work per record format (records of 1,000 events:
decode, check, hash, group by worker) and the prediction records' encoding per format. Events
of the ``ctr`` stream; prints µs per event of each, best of 3.

    python benchmarks/hash_bench.py [--events N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.events import decode_event  # noqa: E402
from connectors.hashing import hash_batch, hash_features, stack_rows  # noqa: E402
from operators.synthetic import CtrSettings, CtrStream  # noqa: E402

BITS = 20


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    n = parser.parse_args().events
    stream = CtrStream(CtrSettings(events=n, seed=2026))
    lines = [json.dumps(doc) for doc, _ in stream.events()]
    features = [decode_event(line).features for line in lines]
    one = best_of(lambda: stack_rows(hash_features(f, BITS) for f in features))
    batch = best_of(lambda: hash_batch(features, BITS))
    decode = best_of(lambda: [decode_event(line) for line in lines])
    one_by_one = stack_rows(hash_features(f, BITS) for f in features)
    same = all(map(np.array_equal, one_by_one, hash_batch(features, BITS)))
    print(f"{n:,} events of the ctr stream, 2^{BITS} dimensions, µs per event (best of 3):")
    print(f"  decode (json + validation):        {decode / n * 1e6:6.1f}")
    print(f"  hash event by event, stacked:      {one / n * 1e6:6.1f}")
    print(f"  hash the batch at once:            {batch / n * 1e6:6.1f}  (same rows: {same})")
    print("the parser, records of 1,000 events: decode, check, hash, group by worker")
    for form, seconds in record_formats(lines).items():
        print(f"  {form:<34} {seconds / n * 1e6:6.1f}")
    print("prediction records of mini-batches of 1,000 (operators/predictions.py)")
    for form, seconds in prediction_formats(n).items():
        print(f"  {form:<34} {seconds / n * 1e6:6.2f}")
    return 0


def record_formats(lines: list[str]) -> dict[str, float]:
    """Seconds the parser takes for ``lines`` as records of each batched input format."""
    from operators.parsing import (
        by_worker,
        columns_by_worker,
        parse_batch,
        parse_columns,
        record_decoder,
        record_encoder,
    )

    docs = [json.loads(line) for line in lines]
    chunks = [docs[i : i + 1000] for i in range(0, len(docs), 1000)]
    ndjson = [[json.dumps(d).encode() for d in chunk] for chunk in chunks]

    def lines_parser():
        for raws in ndjson:
            by_worker(parse_batch(raws, [None] * len(raws)).events, 2, BITS)

    def columnar(form):
        records = [record_encoder(form)(chunk) for chunk in chunks]
        decode = record_decoder(form)
        return lambda: [columns_by_worker(parse_columns(r, (0, 0), decode=decode)[0], 2, BITS)
                        for r in records]  # fmt: skip

    return {"ndjson": best_of(lines_parser),
            "columns (JSON)": best_of(columnar("columns")),
            "arrow": best_of(columnar("arrow"))}  # fmt: skip


def prediction_formats(n: int) -> dict[str, float]:
    """Seconds to write the prediction records of ``n`` events in each format."""
    from operators.predictions import PREDICTION_FORMATS, train_predictions

    rng = np.random.default_rng(1)
    ids = [f"e-{i:09d}" for i in range(1000)]
    labels, scores = rng.integers(0, 2, 1000), rng.random(1000)
    return {form: best_of(lambda form=form: [
                train_predictions("ctr", "ctr#0", ids, labels, scores, 7, 0, 3, form)
                for _ in range(n // 1000)]) for form in PREDICTION_FORMATS}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
