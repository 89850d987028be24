"""Read a topic as ``read_committed`` does, deciding each transaction by the COMMIT/ABORT
marker that the producer's coordinator wrote into the log.

Why: the embedded broker (Tansu) answers read_committed fetches without the list of aborted
transactions, so kafka-python (and Java clients) hand out records of aborted transactions;
the markers themselves are in the log. Apache Kafka needs none of this.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from kafka.record import MemoryRecords

from connectors.admin import consumer


@contextmanager
def _batches_seen(out: list):
    """Record (topic-less) every v2 batch the consumer unpacks: offsets, producer, marker."""
    original = MemoryRecords.next_batch

    def next_batch(self, *args, **kwargs):
        batch = original(self, *args, **kwargs)
        if batch is not None and getattr(batch, "magic", 0) == 2:
            # a control batch's marker is read later: the fetcher checks its CRC first
            control = batch if batch.is_control_batch else None
            out.append((batch.base_offset, batch.last_offset, batch.producer_id,
                        batch.is_transactional, control))  # fmt: skip
        return batch

    MemoryRecords.next_batch = next_batch
    try:
        yield
    finally:
        MemoryRecords.next_batch = original


def committed_records(kafka, topic: str, count: int, timeout: float = 60.0, idle: float = 5.0):
    """The records of committed transactions (and non-transactional ones) of a one-partition
    ``topic``, in order: reads until ``count`` records are decided or nothing new arrived for
    ``idle`` seconds; an open transaction's records are left out, like read_committed."""
    batches: list = []
    records: list = []
    cons = consumer(kafka, topic, committed_only=False)
    assert len(cons.assignment()) == 1, "one partition only"
    try:
        with _batches_seen(batches):
            deadline, last = time.monotonic() + timeout, time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - last < idle:
                for part in cons.poll(timeout_ms=300).values():
                    records.extend(part)
                    last = time.monotonic()
                if len(decide(batches, records)[0]) >= count:
                    break
    finally:
        cons.close()
    return decide(batches, records)[0]


def decide(batches: list, records: list) -> tuple[list, dict]:
    """(committed records, counts of records by fate) from the batches and records read."""
    fate: dict[int, str] = {}  # offset -> committed | aborted
    open_: dict[int, list] = {}  # producer -> [(base, last)] since its last marker
    for i, (base, last, producer, transactional, control) in enumerate(batches):
        if control is not None and not isinstance(control, bool):  # read its marker once
            batches[i] = (base, last, producer, transactional, next(iter(control)).abort)
    for base, last, producer, transactional, abort in sorted(batches, key=lambda b: b[0]):
        if abort is not None:
            verdict = "aborted" if abort else "committed"
            for lo, hi in open_.pop(producer, []):
                for offset in range(lo, hi + 1):
                    fate[offset] = verdict
        elif transactional:
            open_.setdefault(producer, []).append((base, last))
        else:
            for offset in range(base, last + 1):
                fate[offset] = "committed"
    seen, kept, tally = set(), [], {"committed": 0, "aborted": 0, "open": 0}
    for r in records:
        if r.offset in seen:
            continue
        seen.add(r.offset)
        verdict = fate.get(r.offset, "open")
        tally[verdict] += 1
        if verdict == "committed":
            kept.append(r)
    return kept, tally
