"""The one parse path: which records become events, which dead letters and why, and how
events are grouped and hashed for the workers (no JVM, no broker)."""

import json

import numpy as np

from connectors.hashing import hash_batch
from operators.parsing import by_worker, parse_batch, worker_of
from operators.ps import TaskGate


def event(i: int, task: str = "ctr", label: int | None = 1) -> bytes:
    doc = {"event_id": f"e{i}", "ts": i, "task": task, "features": {"os": f"v{i % 3}", "x": i}}
    if label is not None:
        doc["label"] = label
    return json.dumps(doc).encode()


def where(n: int) -> list:
    return [(0, offset, None) for offset in range(n)]


def test_bad_records_are_rejected_with_their_reason_and_place_the_rest_kept_in_order():
    raws = [event(1), b"{not json", None, event(4), b'{"event_id": "e5"}']
    parsed = parse_batch(raws, where(5))
    assert [e.event_id for e in parsed.events] == ["e1", "e4"]
    assert parsed.raws == [raws[0], raws[3]]
    assert [(r.where[1], r.step) for r in parsed.rejected] == [(1, "decode"), (2, "decode"),
                                                              (4, "decode")]  # fmt: skip
    assert all(r.reason for r in parsed.rejected)
    assert parsed.rejected[1].raw is None  # a tombstone is dead-lettered as it came


def test_the_gate_admits_tasks_in_arrival_order_and_refuses_the_excess():
    raws = [event(1, "a"), event(2, "b"), event(3, "a"), event(4, "c")]
    parsed = parse_batch(raws, where(4), TaskGate.of(None, 2))
    assert [e.task for e in parsed.events] == ["a", "b", "a"]
    assert [(r.where[1], r.step) for r in parsed.rejected] == [(3, "admit")]
    assert "--max-tasks 2" in parsed.rejected[0].reason
    doc = json.loads(parsed.rejected[0].letter("events", run="r-1"))
    assert (doc["topic"], doc["offset"], doc["step"], doc["run"]) == ("events", 3, "admit", "r-1")


def test_a_request_may_come_without_a_label_a_training_event_may_not():
    raws = [event(1, label=None)]
    assert parse_batch(raws, where(1), require_label=False).events[0].label is None
    assert parse_batch(raws, where(1)).rejected[0].step == "decode"


def test_by_worker_groups_by_the_stable_worker_hash_and_hashes_like_hash_batch():
    events = parse_batch([event(i, "ab"[i % 2]) for i in range(40)], where(40)).events
    groups = by_worker(events, 3, bits=12, clip=5.0)
    seen = []
    for key, examples, positions in groups:
        mine = [events[p] for p in positions]
        task, worker = key.split("#")
        assert all(e.task == task == examples.task for e in mine)
        assert all(worker_of(e.event_id, 3) == int(worker) for e in mine)
        assert examples.event_ids == [e.event_id for e in mine]
        indptr, indices, values = hash_batch([e.features for e in mine], 12)
        assert np.array_equal(examples.indptr, indptr)
        assert np.array_equal(examples.indices, indices)
        assert np.array_equal(examples.values, np.clip(values, -5.0, 5.0))
        seen += positions
    assert sorted(seen) == list(range(40))
    assert by_worker([], 3, bits=12) == []
