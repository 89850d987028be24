"""The serve job on a real mini-cluster with the embedded broker: one job, several checks.

Task ``a`` is served from a snapshot (``--init-model``); task ``b`` has no model when its
first requests arrive, so they wait in state (up to ``--max-pending``; the rest go to the
dead letters), and is then served from model updates written by this test, so the weights
of every version are known and every score can be checked against the version it names.
Task ``c`` never gets a model: its requests go to the dead letters after ``--max-wait``.
Task ``d`` comes fourth with ``--max-tasks 3``: refused, its requests dead-lettered at once.
"""

import dataclasses
import json
import subprocess
import time

import numpy as np
import pytest

from connectors.admin import consumer, create_topics, produce, read_records
from connectors.hashing import hash_batch
from connectors.messages import ModelUpdate
from operators.local import OnlineLogistic
from operators.logistic import sigmoid
from operators.snapshot import from_updates, save
from operators.synthetic import CtrSettings, CtrStream
from tests.cli_helpers import SCRIPT

pytestmark = [pytest.mark.flink, pytest.mark.kafka]

BITS = 12
PENDING = 200
MAX_WAIT_S = 20  # b's requests wait a few seconds for its first update, c's for ever


def versions_of(seed: int, count: int, batch: int = 200) -> list[np.ndarray]:
    """Dense weights after each of ``count`` mini-batches of a local learner."""
    model = OnlineLogistic(BITS, alpha=0.2)
    out = []
    events = list(CtrStream(CtrSettings(events=count * batch, seed=seed)).events())
    for i in range(count):
        docs = [doc for doc, _ in events[i * batch : (i + 1) * batch]]
        indptr, indices, values = hash_batch([d["features"] for d in docs], BITS)
        model.learn_many(indptr, indices, values, [d["label"] for d in docs])
        out.append(model.weights_)
    return out


def update(task, run, version, weights, ts) -> ModelUpdate:
    idx = np.flatnonzero(weights)
    return ModelUpdate(run, task, 0, version, {"w": version}, idx, weights[idx], ts=ts)


def requests(task: str, prefix: str, n: int, seed: int) -> list[dict]:
    docs = []
    for doc, _ in CtrStream(CtrSettings(events=n, seed=seed, task=task)).events():
        doc = {k: v for k, v in doc.items() if k != "label"}
        docs.append(
            {**doc, "event_id": f"{prefix}-{doc['event_id']}", "ts": int(time.time() * 1000)}
        )
    return docs


def wait_for(predicate, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


class Reader:
    """Everything committed on a topic so far (read_committed, assign())."""

    def __init__(self, kafka, topic):
        self.cons = consumer(kafka, topic, committed_only=True)
        self.docs: list[dict] = []

    def poll(self) -> list[dict]:
        for records in self.cons.poll(timeout_ms=200).values():
            self.docs += [json.loads(r.value) for r in records]
        return self.docs


def test_serve_answers_every_request_once_with_a_model_it_had(kafka, topic_name, tmp_path):
    req_t, upd_t, pred_t, dlq_t = (f"{topic_name}-{x}" for x in ("req", "upd", "pred", "dlq"))
    create_topics(kafka, [req_t, upd_t, pred_t, dlq_t], partitions=1)

    # task a: a snapshot made from a run's updates, as `streamshard snapshot` makes it
    w_a = versions_of(seed=31, count=3)
    snap_ts = int(time.time() * 1000)
    snap = from_updates(
        [update("a", "run-a", v + 1, w, snap_ts + v) for v, w in enumerate(w_a)], BITS
    )[0]
    save(snap, tmp_path / "models")
    assert snap.version == 3

    # task b: five versions; phase 1 requests come before any of them
    w_b = versions_of(seed=32, count=5)
    phase1 = requests("a", "a1", 300, seed=33) + requests("b", "b1", 300, seed=34)
    phase1 += requests("c", "c1", 50, seed=37) + requests("d", "d1", 5, seed=38)
    bad = (
        [b'{"event_id": "x1"', b'{"event_id": "x2", "ts": 1, "features": []}']
        + [
            json.dumps({"event_id": f"x{i}", "ts": 1, "features": {"f": float("nan")}}).encode()
            for i in range(3, 6)
        ]
        + [None, b'{"event_id": "\xff", "ts": 1, "features": {}}']
    )  # a tombstone, not UTF-8
    # phase 2 also asks task a again: after the hostile updates it must still be served by a
    phase2 = requests("b", "b2", 300, seed=35) + requests("a", "a2", 100, seed=36)
    phase2[-1]["ts"] -= 400 * 86_400_000  # a year-old request: answered, no absurd latency
    total = len(phase1) + len(bad) + len(phase2)
    produce(kafka, req_t, [(d["event_id"].encode(), json.dumps(d).encode()) for d in phase1])
    produce(kafka, req_t, [(b"bad", b) for b in bad])

    summary_path = tmp_path / "serve.json"
    job = subprocess.Popen(
        [
            SCRIPT,
            "serve",
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--requests-topic",
            req_t,
            "--updates-topic",
            upd_t,
            "--predictions-topic",
            pred_t,
            "--dead-letter-topic",
            dlq_t,
            "--hash-bits",
            str(BITS),
            "--init-model",
            str(tmp_path / "models"),
            "--max-pending",
            str(PENDING),
            "--max-wait",
            str(MAX_WAIT_S),
            "--max-tasks",
            "3",
            "--delivery",
            "exactly-once",
            "--checkpoint-dir",
            f"file://{tmp_path}/ckpt",
            "--checkpoint-interval",
            "1000",
            "--max-events",
            str(total),
            "--summary-json",
            str(summary_path),
            "--timeout",
            "300",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        preds, dead = Reader(kafka, pred_t), Reader(kafka, dlq_t)
        overflow = 300 - PENDING
        # phase 1 done: task a answered from the snapshot, b's overflow dead-lettered
        wait_for(
            lambda: len(preds.poll()) >= 300 and len(dead.poll()) >= overflow + len(bad),
            "phase 1 answers",
        )
        assert all(p["task"] == "a" for p in preds.docs)  # b had no model: nothing for b
        # an older run's update of task a (before the snapshot) must not replace it
        stale = update("a", "run-old", 1, np.full(w_a[0].size, 9.0), ts=snap_ts - 60_000)
        # b's version 1 is no longer on the topic (retention): served from version 2 on,
        # each of its predictions says which shard lacks its head
        ups = [update("b", "run-b", v + 1, w, snap_ts + 10 + v) for v, w in enumerate(w_b)][1:]
        ups.insert(3, ups[1])  # a duplicate (at-least-once feedback edge): must be skipped
        # runs that must never be followed: one stamped far in the future, one of other bits
        future = update("a", "run-future", 1, np.full(w_a[0].size, 7.0), ts=snap_ts + 10**10)
        bigger = dataclasses.replace(
            update("a", "run-big", 1, np.full(w_a[0].size, 5.0), ts=snap_ts + 20), bits=BITS + 2
        )
        hostile = [future, bigger]
        produce(kafka, upd_t, [(None, u.to_json().encode()) for u in [stale, *hostile, *ups]])
        # the waiting requests are answered once b's first update is in; only then phase 2,
        # so its requests cannot find the pending buffer still full
        wait_for(lambda: len(preds.poll()) >= 300 + PENDING, "the waiting requests' answers")
        produce(kafka, req_t, [(d["event_id"].encode(), json.dumps(d).encode()) for d in phase2])
        out, err = job.communicate(timeout=400)
    finally:
        job.kill()
    assert job.returncode == 0, err[-4000:]
    summary = json.loads(summary_path.read_text())

    wait_for(lambda: len(preds.poll()) >= 300 + PENDING + 400, "all predictions", 30)
    dead.poll()
    by_id = {}
    for p in preds.docs:
        assert p["event_id"] not in by_id, f"answered twice: {p['event_id']}"
        by_id[p["event_id"]] = p
    served = [d for d in dead.docs if d["step"] == "serve"]
    dead_ids = [json.loads(d["payload"]).get("event_id") for d in served]
    answered_b1 = {k for k in by_id if k.startswith("b1-")}
    c_ids = {d["event_id"] for d in phase1 if d["task"] == "c"}
    # every request exactly once: answered, or dead-lettered with its reason
    assert len(by_id) == 300 + PENDING + 400 == summary["predictions"]
    assert {p["model_run"] for p in by_id.values() if p["task"] == "a"} == {"run-a"}
    d_ids = {d["event_id"] for d in phase1 if d["task"] == "d"}
    admit = [d for d in dead.docs if d["step"] == "admit"]
    assert {json.loads(d["payload"])["event_id"] for d in admit} == d_ids and len(admit) == 5
    assert all("--max-tasks 3 already admitted a,b,c" in d["reason"] for d in admit), admit[0]
    assert len(dead.docs) == overflow + len(c_ids) + 5 + len(bad) == summary["dead_letters"]
    assert len(answered_b1) == PENDING and len(dead_ids) == len(set(dead_ids)) == overflow + 50
    assert answered_b1.isdisjoint(dead_ids) and c_ids <= set(dead_ids)
    for d, event_id in zip(served, dead_ids, strict=True):  # b's overflow at once, c's expired
        expected = f"within {MAX_WAIT_S} s" if event_id in c_ids else "no model yet"
        assert expected in d["reason"], d
    decode = [d for d in dead.docs if d["step"] == "decode"]
    assert all(d["reason"] for d in decode) and len(decode) == len(bad)
    assert any("tombstone" in d["reason"] for d in decode)
    assert all(d["offset"] is not None for d in decode)  # where each came from

    # each score is the score of the model version it names
    weights = {("a", "run-a", 3): snap.weights}
    weights.update({("b", "run-b", v + 1): w for v, w in enumerate(w_b)})
    docs = {d["event_id"]: d for d in phase1 + phase2}
    for task in ("a", "b"):
        mine = [p for p in by_id.values() if p["task"] == task]
        indptr, indices, values = hash_batch([docs[p["event_id"]]["features"] for p in mine], BITS)
        for i, p in enumerate(mine):
            w = weights[(task, p["model_run"], p["model_version"])]
            lo, hi = indptr[i], indptr[i + 1]
            expected = sigmoid(np.array([w[indices[lo:hi]] @ values[lo:hi] + w[-1]]))[0]
            assert abs(p["score"] - expected) <= 1e-9
            if p["event_id"] == phase2[-1]["event_id"]:
                assert p["latency_ms"] is None
            else:
                assert 0 <= p["latency_ms"] < 300_000
            assert p["model_age_ms"] >= 0
    # requests that waited were answered by a model that existed (b's, version >= 1)
    assert {by_id[k]["model_run"] for k in answered_b1} == {"run-b"}
    assert max(p["model_version"] for p in by_id.values() if p["task"] == "b") == 5
    assert summary["distinct_event_ids"] == summary["predictions"]
    assert summary["ts_out_of_range"] == 1
    assert {json.dumps(p.get("model_gaps")) for p in by_id.values() if p["task"] == "b"} == {
        '{"0": 2}'
    }
    assert not any("model_gaps" in p for p in by_id.values() if p["task"] == "a")
    assert summary["model_gaps"] == {"b": {"0": 2}}
    assert "no longer holds the first updates of task b (shard 0 starts at version 2)" in err


def test_serve_answers_every_request_once_across_a_failure(kafka, topic_name, tmp_path):
    """Exactly-once predictions across a restart: the job throws at its first request batch
    after a completed checkpoint (hidden ``--inject-failure``) and Flink restores it from that
    checkpoint while requests keep coming. In the committed view every request is answered
    once, by the model it had."""
    from operators.faults import completed_checkpoint
    from tests.txn import committed_records

    req_t, upd_t, pred_t, dlq_t = (f"{topic_name}-{x}" for x in ("req", "upd", "pred", "dlq"))
    create_topics(kafka, [req_t, upd_t, pred_t, dlq_t], partitions=1)
    weights = versions_of(seed=41, count=2)
    ts = int(time.time() * 1000)
    snap = from_updates([update("a", "run-a", v + 1, w, ts + v) for v, w in enumerate(weights)],
                        BITS)[0]  # fmt: skip
    save(snap, tmp_path / "models")
    phases = [requests("a", f"p{i}", 500, seed=50 + i) for i in range(3)]
    total = sum(map(len, phases))
    marker, ckpt = tmp_path / "failed-once", f"file://{tmp_path}/ckpt"

    def send(docs):
        produce(kafka, req_t, [(d["event_id"].encode(), json.dumps(d).encode()) for d in docs])

    send(phases[0])
    job = subprocess.Popen(
        [SCRIPT, "serve", "--bootstrap-servers", kafka.bootstrap_servers,
         "--requests-topic", req_t, "--updates-topic", upd_t, "--predictions-topic", pred_t,
         "--dead-letter-topic", dlq_t, "--hash-bits", str(BITS),
         "--init-model", str(tmp_path / "models"), "--delivery", "exactly-once",
         "--checkpoint-dir", ckpt, "--checkpoint-interval", "1000",
         "--max-events", str(total), "--inject-failure", str(marker), "--timeout", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: completed_checkpoint(ckpt), "a completed checkpoint")
        send(phases[1])  # its first batch is answered, then fails (unless phase 0's did)
        wait_for(marker.exists, "the injected failure")
        send(phases[2])  # read by the restored job
        out, err = job.communicate(timeout=400)
    finally:
        job.kill()
    assert job.returncode == 0, err[-4000:]

    # the embedded broker hands aborted transactions to read_committed readers: the committed
    # view comes from the transaction markers (tests/txn.py)
    committed = [json.loads(r.value) for r in committed_records(kafka, pred_t, total + 1, idle=5)]
    written = read_records(kafka, pred_t, count=2 * total, timeout=10, idle=3, committed_only=False)
    assert len(written) > total, "the failure came before any answer it could have doubled"
    ids = [p["event_id"] for p in committed]
    assert len(ids) == len(set(ids)), "a request answered twice"
    assert set(ids) == {d["event_id"] for phase in phases for d in phase}
    assert not committed_records(kafka, dlq_t, 1, timeout=5, idle=2)
    docs = {d["event_id"]: d for phase in phases for d in phase}
    indptr, indices, values = hash_batch([docs[i]["features"] for i in ids], BITS)
    margins = [snap.weights[indices[lo:hi]] @ values[lo:hi] + snap.weights[-1]
               for lo, hi in zip(indptr[:-1], indptr[1:], strict=True)]  # fmt: skip
    expected = sigmoid(np.array(margins))
    assert np.abs(np.array([p["score"] for p in committed]) - expected).max() <= 1e-9
    assert {(p["model_run"], p["model_version"]) for p in committed} == {("run-a", 2)}
