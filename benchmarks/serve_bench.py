"""Serving benchmark: latency p50/p99 and throughput of ``streamshard serve`` at a fixed
request rate, beside a hand-rolled single-process loop (decode, hash, score) on the same
requests. Not a test: it reports, it does not assert.

    python benchmarks/serve_bench.py [--rate 500] [--seconds 30] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import md_table, write  # noqa: E402
from connectors.admin import consumer, create_topics, producer  # noqa: E402
from connectors.broker import EmbeddedBroker  # noqa: E402
from connectors.config import KafkaConfig  # noqa: E402
from connectors.events import decode_event  # noqa: E402
from connectors.hashing import hash_batch, hash_features  # noqa: E402
from connectors.snapshot import Snapshot, save  # noqa: E402
from connectors.synthetic import CtrSettings, CtrStream  # noqa: E402
from operators.local import OnlineLogistic  # noqa: E402
from operators.logistic import sigmoid  # noqa: E402

BITS = 20
SCRIPT = str(Path(sys.executable).with_name("streamshard"))


def train_model(events: int) -> Snapshot:
    model = OnlineLogistic(BITS)
    docs = [d for d, _ in CtrStream(CtrSettings(events=events, seed=7)).events()]
    for i in range(0, len(docs), 100):
        batch = docs[i : i + 100]
        indptr, indices, values = hash_batch([d["features"] for d in batch], BITS)
        model.learn_many(indptr, indices, values, [d["label"] for d in batch])
    return Snapshot("ctr", BITS, model.version_, model.weights_, run="bench")


def request_docs(n: int) -> list[dict]:
    out = []
    for doc, _ in CtrStream(CtrSettings(events=n, seed=8)).events():
        doc.pop("label")
        out.append(doc)
    return out


def plain_loop(snapshot: Snapshot, docs: list[dict]) -> float:
    """Requests/s of a hand-rolled loop: decode, hash and score one request at a time."""
    raw = [json.dumps(d).encode() for d in docs]
    w = snapshot.weights
    start = time.perf_counter()
    for value in raw:
        event = decode_event(value, require_label=False)
        idx, vals = hash_features(event.features, BITS)
        sigmoid(np.array([w[idx] @ vals + w[-1]]))
    return len(raw) / (time.perf_counter() - start)


def serve_run(kafka, model_dir, docs, rate, warmup, tmp, extra=()) -> dict:
    """Start the serve job, warm it up, then send ``docs`` at ``rate`` requests/s (0: all
    at once, for throughput) and collect the predictions."""
    tag = f"b{int(time.time())}-{rate}"
    topics = {x: f"{tag}-{x}" for x in ("req", "upd", "pred", "dlq")}
    create_topics(kafka, list(topics.values()))
    total = warmup + len(docs)
    job = subprocess.Popen(
        [
            SCRIPT,
            "serve",
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--requests-topic",
            topics["req"],
            "--updates-topic",
            topics["upd"],
            "--predictions-topic",
            topics["pred"],
            "--dead-letter-topic",
            topics["dlq"],
            "--hash-bits",
            str(BITS),
            "--init-model",
            str(model_dir),
            "--max-events",
            str(total),
            "--checkpoint-dir",
            f"file://{tmp}/ckpt-{tag}",
            "--summary-json",
            f"{tmp}/{tag}.json",
            "--timeout",
            "900",
            "--trace",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    prod = producer(kafka, linger_ms=0, acks=1)
    received: list[tuple[dict, int]] = []
    stop = threading.Event()

    def read() -> None:  # its own thread, so arrival times are not the sender's
        cons = consumer(kafka, topics["pred"], committed_only=True, fetch_max_wait_ms=20)
        try:
            while not stop.is_set():
                for records in cons.poll(timeout_ms=50).values():
                    now = int(time.time() * 1000)
                    received.extend((json.loads(r.value), now) for r in records)
        finally:
            cons.close()

    def wait_for(count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(received) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for i in range(warmup):  # the job's start-up is not measured
            doc = {**docs[i % len(docs)], "event_id": f"warm-{i}", "ts": int(time.time() * 1000)}
            prod.send(topics["req"], json.dumps(doc).encode())
        prod.flush()
        wait_for(warmup, 300)
        if len(received) < warmup:
            raise RuntimeError("the serve job did not answer the warm-up requests")
        start = time.monotonic()
        for i, doc in enumerate(docs):
            if rate:
                ahead = start + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            prod.send(topics["req"], json.dumps({**doc, "ts": int(time.time() * 1000)}).encode())
        prod.flush()
        wait_for(total, 600)
        job.wait(timeout=120)
    finally:
        stop.set()
        reader.join()
        job.kill()
        prod.close()
    timed = [(p, at) for p, at in received if not p["event_id"].startswith("warm-")]
    served = np.array([p["latency_ms"] for p, _ in timed], float)
    end_to_end = np.array([at - (p["served_at"] - p["latency_ms"]) for p, at in timed], float)
    def stage(values) -> dict:
        x = np.array(list(values), float)
        return {f"p{q}": float(np.percentile(x, q)) for q in (50, 99)}

    stages = {  # where the milliseconds go (serve --trace)
        "to_parse": stage(p["trace"]["parsed"] - (p["served_at"] - p["latency_ms"]) for p, _ in timed),
        "parse_to_scoring": stage(p["trace"]["scoring"] - p["trace"]["parsed"] for p, _ in timed),
        "scoring": stage(p["served_at"] - p["trace"]["scoring"] for p, _ in timed),
        "to_consumer": stage(at - p["served_at"] for p, at in timed),
    }
    print(rate, json.dumps(stages))
    import os
    if os.environ.get("DUMP"):
        Path(os.environ["DUMP"] + f"-{rate}.json").write_text(json.dumps(timed))
    first = min(p["served_at"] - p["latency_ms"] for p, _ in timed)
    last = max(p["served_at"] for p, _ in timed)
    return {
        "rate": rate or "all at once",
        "requests": len(docs),
        "answered": len(timed),
        "throughput_per_s": len(timed) * 1000 / max(1, last - first),
        "serve_latency_ms": {f"p{q}": float(np.percentile(served, q)) for q in (50, 99)},
        "end_to_end_latency_ms": {f"p{q}": float(np.percentile(end_to_end, q)) for q in (50, 99)},
        "stages_ms": stages,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=500, help="requests/s of the fixed-rate run")
    parser.add_argument("--seconds", type=int, default=30, help="length of the fixed-rate run")
    parser.add_argument("--quick", action="store_true", help="a short run (10 s, 5,000 burst)")
    args = parser.parse_args(argv)
    seconds = 10 if args.quick else args.seconds
    burst = 5_000 if args.quick else 20_000
    snapshot = train_model(20_000)
    docs = request_docs(max(args.rate * seconds, burst))
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        kafka = KafkaConfig(broker.bootstrap_servers)
        model_dir = save(snapshot, Path(tmp) / "models")
        loop_rate = plain_loop(snapshot, docs[:burst])
        import os, shlex
        extra = shlex.split(os.environ.get("EXTRA", ""))
        fixed = serve_run(kafka, model_dir, docs[: args.rate * seconds], args.rate, 200, tmp, extra)
        flood = serve_run(kafka, model_dir, docs[:burst], 0, 200, tmp, extra)
    rows = [
        [
            r["rate"],
            f"{r['requests']:,}",
            f"{r['answered']:,}",
            f"{r['throughput_per_s']:,.0f}",
            f"{r['serve_latency_ms']['p50']:.0f} / {r['serve_latency_ms']['p99']:.0f}",
            f"{r['end_to_end_latency_ms']['p50']:.0f} / {r['end_to_end_latency_ms']['p99']:.0f}",
            f"{r['throughput_per_s'] / loop_rate:.2f}",
        ]
        for r in (fixed, flood)
    ]
    table = md_table(
        [
            "offered rate (req/s)",
            "requests",
            "answered",
            "served/s",
            "serve latency p50/p99 ms",
            "end-to-end p50/p99 ms",
            "÷ plain loop",
        ],
        rows,
    )
    note = (
        f"\nPlain single-process loop (decode + hash + score each request, no Kafka): "
        f"{loop_rate:,.0f} requests/s on {burst:,} requests.\n"
        "Serve latency: request `ts` to the prediction leaving the operator; end-to-end: to the "
        "benchmark's consumer reading it from Kafka (at-least-once sink, linger 0).\n"
    )
    doc = {"plain_loop_per_s": loop_rate, "runs": [fixed, flood], "hash_bits": BITS}
    js, md = write("serve", doc, table + note)
    print(table + note)
    print(f"results: {js} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
