"""Model-update encoding: the JSON form against the binary form the training job writes
(``ModelUpdate.to_bytes``: a JSON header, then int32 indices and float64 arrays raw), for
updates of the sizes the job writes, without and with read-my-writes state (seven arrays
with standardization). Prints bytes and encode/decode time per update.

    python benchmarks/codec_bench.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.messages import ModelUpdate, decode_update  # noqa: E402

STATE = ("z", "n", "count", "mean", "m2", "center", "scale")


def timed(fn, arg, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn(arg)
    return (time.perf_counter() - start) / repeat * 1e6


def main() -> int:
    rng = np.random.default_rng(0)
    print("| coordinates | state arrays | JSON bytes | binary bytes | JSON enc/dec µs | "
          "binary enc/dec µs |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for n in (50, 300, 1500):
        for names in ((), STATE):
            idx = np.sort(rng.choice(1 << 20, n, replace=False))
            state = {k: rng.normal(size=n) for k in names} or None
            u = ModelUpdate("r-1a2b3c4d5e6f", "ctr", 2, 1234, {"ctr#0": 616, "ctr#1": 617},
                            idx, rng.normal(size=n) * 0.1, applied=[["ctr#0", 616]],
                            ts=1795413721345, state=state)  # fmt: skip
            js, bi = u.to_json(), u.to_bytes()
            reps = 1000 if n < 1000 else 200
            print(
                f"| {n} | {len(names)} | {len(js):,} | {len(bi):,} | "
                f"{timed(ModelUpdate.to_json, u, reps):.0f} / {timed(decode_update, js, reps):.0f}"
                f" | {timed(ModelUpdate.to_bytes, u, reps):.0f} / "
                f"{timed(decode_update, bi, reps):.0f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
