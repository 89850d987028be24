"""What a fetch costs the embedded broker as a topic grows.

Produces 300-byte records in batches of 25 (what a 5 ms linger makes of 5,000 records/s) and,
at each size, times 50 fetches of the topic's last 100 records: the broker's CPU per fetch and
the wall time. Run: ``python benchmarks/broker_fetch_cost.py`` (about a minute)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZES = (10_000, 100_000, 200_000, 300_000, 400_000, 500_000, 600_000)
FETCHES = 50
TAIL = 100


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    from connectors.admin import create_topics
    from connectors.broker import EmbeddedBroker
    from connectors.config import KafkaConfig

    with EmbeddedBroker() as broker:
        pid = broker.process.pid
        create_topics(KafkaConfig(broker.bootstrap_servers), ["t"], partitions=1)
        prod = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5,
                         "batch.num.messages": 25})  # fmt: skip
        total = 0
        print("| records | broker µs/record produced | broker ms CPU/fetch | wall ms/fetch |")
        print("|---|---|---|---|")
        for size in SIZES:
            before, start = cpu_seconds(pid), total
            while total < size:
                try:
                    prod.produce("t", b"x" * 300)
                    total += 1
                except BufferError:
                    prod.poll(0.01)
            prod.flush()
            produced = 1e6 * (cpu_seconds(pid) - before) / (total - start)
            cons = Consumer({"bootstrap.servers": broker.bootstrap_servers,
                             "group.id": "fetch-cost", "enable.auto.commit": False,
                             "fetch.wait.max.ms": 20})  # fmt: skip
            before, wall = cpu_seconds(pid), time.monotonic()
            for _ in range(FETCHES):
                cons.assign([TopicPartition("t", 0, total - TAIL)])
                got = 0
                while got < TAIL:
                    got += sum(m.error() is None for m in cons.consume(TAIL, 1.0))
            cons.close()
            per_fetch = 1000 * (cpu_seconds(pid) - before) / FETCHES
            wall_ms = 1000 * (time.monotonic() - wall) / FETCHES
            print(f"| {total:,} | {produced:.1f} | {per_fetch:.1f} | {wall_ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
