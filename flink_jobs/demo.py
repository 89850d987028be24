"""``streamshard demo``: everything end to end on this machine, nothing to configure.

Starts the embedded broker, generates a click stream with 1% malformed records, runs the
``validate`` Flink job on a local mini-cluster, counts what landed where, and stops the broker.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from connectors.broker import EmbeddedBroker
from connectors.config import KafkaConfig
from connectors.synthetic import CtrSettings


def run_demo(args: argparse.Namespace) -> int:
    from connectors.admin import read_records
    from flink_jobs import generate, validate

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with EmbeddedBroker(log_path=out / "broker.log") as broker:
        kafka = KafkaConfig(broker.bootstrap_servers)
        print(f"[demo] embedded broker at {broker.bootstrap_servers}")
        gen = generate.generate(
            generate.GenerateConfig(
                kafka=kafka,
                settings=CtrSettings(events=args.events, seed=42),
                topic="events",
                partitions=2,
                truth_path=str(out / "truth.json"),
                malformed=0.01,
            )
        )
        print(
            f"[demo] generated {gen.events:,} events ({gen.malformed} malformed), "
            f"end offsets {gen.offsets_flag()}"
        )
        print("[demo] running the validate job on a local Flink mini-cluster ...")
        validate.run(validate.ValidateConfig(kafka=kafka, stop_offsets=gen.end_offsets))
        valid = read_records(kafka, "events-valid", gen.events - gen.malformed, timeout=60)
        dead = read_records(kafka, "dead-letters", gen.malformed, timeout=30)
        reasons: dict[str, int] = {}
        for record in dead:
            reason = json.loads(record.value)["reason"].split(":")[0]
            reasons[reason] = reasons.get(reason, 0) + 1
    truth = json.loads((out / "truth.json").read_text())
    print(f"[demo] events-valid: {len(valid):,} records; dead-letters: {len(dead):,}")
    for reason, count in sorted(reasons.items()):
        print(f"[demo]   {count:>5}  {reason}")
    print(
        f"[demo] true model on this stream: AUC {truth['auc']:.4f}, "
        f"log loss {truth['log_loss']:.4f}, click rate {truth['positive_rate']:.3f}"
    )
    print(f"[demo] done in {time.monotonic() - t0:.0f}s; files in {out}/")
    ok = len(valid) == gen.events - gen.malformed and len(dead) == gen.malformed
    return 0 if ok else 1
