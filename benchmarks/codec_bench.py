"""Model-update encoding: the JSON on the wire today against a compact binary layout
(a JSON header + raw little-endian int32 indices and float64 values), for updates of the
sizes the training job writes. Prints bytes and encode/decode time per update.

    python benchmarks/codec_bench.py
"""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.messages import ModelUpdate, decode_update  # noqa: E402


def to_binary(u: ModelUpdate) -> bytes:
    head = json.dumps(
        {"run": u.run, "task": u.task, "shard": u.shard, "version": u.version, "clock": u.clock,
         "ts": u.ts, "applied": u.applied}, separators=(",", ":"),
    ).encode()  # fmt: skip
    return b"".join(
        [struct.pack("<II", len(head), u.indices.size), head,
         u.indices.astype("<i4").tobytes(), u.values.astype("<f8").tobytes()]
    )  # fmt: skip


def from_binary(raw: bytes):
    hlen, n = struct.unpack_from("<II", raw)
    head = json.loads(raw[8 : 8 + hlen])
    at = 8 + hlen
    idx = np.frombuffer(raw, "<i4", n, at).astype(np.int64)
    vals = np.frombuffer(raw, "<f8", n, at + 4 * n)
    return head, idx, vals


def timed(fn, arg, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn(arg)
    return (time.perf_counter() - start) / repeat * 1e6


def main() -> int:
    rng = np.random.default_rng(0)
    print("| coordinates | JSON bytes | binary bytes | JSON enc/dec µs | binary enc/dec µs |")
    print("|---|---|---|---|---|")
    for n in (50, 300, 1500):
        idx = np.sort(rng.choice(1 << 20, n, replace=False))
        clock = {"ctr#0": 616, "ctr#1": 617}
        u = ModelUpdate("r-1a2b3c4d5e6f", "ctr", 2, 1234, clock, idx, rng.normal(size=n) * 0.1,
                        applied=[["ctr#0", 616]], ts=1795413721345)  # fmt: skip
        js, bi = u.to_json(), to_binary(u)
        reps = 2000 if n < 1000 else 300
        print(
            f"| {n} | {len(js):,} | {len(bi):,} | {timed(ModelUpdate.to_json, u, reps):.0f} / "
            f"{timed(decode_update, js, reps):.0f} | {timed(to_binary, u, reps):.0f} / "
            f"{timed(from_binary, bi, reps):.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
