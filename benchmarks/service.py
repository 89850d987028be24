"""The consumer service a user would write instead of streamshard: one Python process that
reads the events topic, decodes and validates each event, hashes and learns per mini-batch
(test-then-train), and writes one prediction per event to a Kafka topic.

    python benchmarks/service.py --client confluent-kafka|kafka-python \\
        --bootstrap-servers HOST:PORT --topic T --out-topic O --events N [--bits 20] [--batch 100]

It uses the project's own decoder (orjson + validation, bad records to a dead-letter topic),
hasher and learner, so its rows differ from streamshard's only by the machinery around them.
Delivery is at-least-once (``acks=all``; no consumer group: the embedded broker's group
protocol is broken, see the platform notes, so the partition is assigned and read from
offset 0). Prints one JSON document: events/s (first record to last prediction acknowledged),
AUC, the process's CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.learners import metrics  # noqa: E402
from connectors.deadletter import dead_letter  # noqa: E402
from connectors.errors import DecodeError  # noqa: E402
from connectors.events import decode_event  # noqa: E402
from connectors.hashing import hash_batch  # noqa: E402
from operators.local import OnlineLogistic  # noqa: E402

PRODUCER_BATCH_BYTES = 1 << 20  # the embedded broker: ~35 us per record at defaults, ~9 here
LINGER_MS = 5


class Confluent:
    """confluent-kafka (librdkafka)."""

    settings = f"librdkafka, acks=all, linger.ms={LINGER_MS}, batch.size=1 MiB"

    def __init__(self, servers: str, topic: str):
        from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": servers, "group.id": "service-bench",
                                  "enable.auto.commit": False})  # fmt: skip
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.producer = Producer({"bootstrap.servers": servers, "acks": "all",
                                  "linger.ms": LINGER_MS, "batch.size": PRODUCER_BATCH_BYTES,
                                  "queue.buffering.max.messages": 1_000_000})  # fmt: skip

    def poll(self, n: int) -> list[tuple[int, bytes]]:
        out = []
        for msg in self.consumer.consume(num_messages=n, timeout=0.5):
            if msg.error() is None:
                out.append((msg.offset(), msg.value()))
        return out

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key)
                return
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.05)

    def flush(self) -> None:
        self.producer.poll(0)
        self.producer.flush(60)

    def close(self) -> None:
        self.consumer.close()


class KafkaPython:
    """kafka-python (pure Python)."""

    settings = f"pure Python, acks=all, linger_ms={LINGER_MS}, batch_size=1 MiB"

    def __init__(self, servers: str, topic: str):
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False,
                                      max_partition_fetch_bytes=8 << 20)  # fmt: skip
        part = TopicPartition(topic, 0)
        self.consumer.assign([part])
        self.consumer.seek(part, 0)
        self.producer = KafkaProducer(
            bootstrap_servers=servers, acks="all", linger_ms=LINGER_MS,
            batch_size=PRODUCER_BATCH_BYTES,
        )  # fmt: skip

    def poll(self, n: int) -> list[tuple[int, bytes]]:
        got = self.consumer.poll(timeout_ms=500, max_records=n)
        return [(r.offset, r.value) for records in got.values() for r in records]

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.producer.send(topic, value=value, key=key)

    def flush(self) -> None:
        self.producer.flush(60)

    def close(self) -> None:
        self.consumer.close()
        self.producer.close(10)


CLIENTS = {"confluent-kafka": Confluent, "kafka-python": KafkaPython}


def run(client, args) -> dict:
    model = OnlineLogistic(args.bits)
    labels, scores, events, seen, dead, start = [], [], [], 0, 0, None
    deadline = time.monotonic() + args.timeout
    while seen < args.events and time.monotonic() < deadline:
        records = client.poll(min(args.batch - len(events), args.events - seen))
        start = start or (time.perf_counter() if records else None)
        seen += len(records)
        for offset, value in records:
            try:
                events.append(decode_event(value))
            except DecodeError as exc:
                dead += 1
                letter = dead_letter(value, exc.reason, args.topic, 0, offset).encode()
                client.send(args.dead_letter_topic, b"", letter)
        if not events or (len(events) < args.batch and seen < args.events):
            continue  # mini-batches of exactly --batch events, as the other contenders
        y = [e.label for e in events]
        indptr, indices, values = hash_batch([e.features for e in events], args.bits)
        s = model.learn_many(indptr, indices, values, y)
        for event, score in zip(events, s.tolist(), strict=True):
            doc = {"event_id": event.event_id, "task": event.task, "label": event.label,
                   "score": score, "model_version": model.version_}  # fmt: skip
            client.send(args.out_topic, event.event_id.encode(), orjson.dumps(doc))
        labels += y
        scores.append(s)
        events = []
    client.flush()
    elapsed = time.perf_counter() - (start or time.perf_counter())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    client.close()
    return {
        "name": f"service ({args.client})",
        "client": client.settings,
        "events": seen,
        "dead_letters": dead,
        "seconds": elapsed,
        "events_per_s": seen / elapsed if elapsed else 0.0,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        **metrics(labels, np.concatenate(scores) if scores else np.zeros(0)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=sorted(CLIENTS), default="confluent-kafka")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out-topic", required=True)
    parser.add_argument("--dead-letter-topic", default="service-dead-letters")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--bits", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    client = CLIENTS[args.client](args.bootstrap_servers, args.topic)
    print(json.dumps(run(client, args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
