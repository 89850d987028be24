"""Feature hashing: event by event (memoized MurmurHash3 per token, what ``serve`` does)
against a whole batch in one ``FeatureHasher`` call (what the training job does with each
gathered batch). Events of the ``ctr`` stream; prints µs per event of each, best of 3.

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
