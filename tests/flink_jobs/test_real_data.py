"""Real data with default learning settings: the small data sets that ship inside PyPI
packages on which linear learners differ (``datasets.SEPARATING``), through Kafka and the
training job (one worker, one shard: a small stream's topology), against River's defaults on
the same rows in the same order (computed here), and the exported model scoring as the
streamed one."""

import json

import numpy as np
import pytest

from benchmarks.quality import river
from connectors import datasets
from connectors.admin import create_topics, produce, read_records
from connectors.hashing import hash_batch
from connectors.messages import decode_update
from operators.export import to_sklearn
from operators.logistic import predict_proba
from operators.replica import Replica
from operators.snapshot import from_updates
from operators.synthetic import encode
from tests.cli_helpers import streamshard

pytestmark = [pytest.mark.flink, pytest.mark.kafka]

BITS = 20  # the default


def test_defaults_learn_real_data_at_least_as_well_as_river(kafka, topic_name, tmp_path):
    rows = {name: datasets.rows(name) for name in datasets.SEPARATING}
    records = []
    for name in datasets.SEPARATING:  # one task per data set, each in its own order
        for doc in datasets.events(name, task=name):
            doc["event_id"] = f"{name}-{doc['event_id']}"
            records.append((doc["event_id"].encode(), encode(doc)))
    create_topics(kafka, [topic_name], partitions=1)
    produce(kafka, topic_name, records)
    summary = tmp_path / "summary.json"
    out = streamshard(
        "train", "--bootstrap-servers", kafka.bootstrap_servers, "--workers", "1", "--shards", "1",
        "--input-topic", topic_name, "--updates-topic", f"{topic_name}-updates",
        "--predictions-topic", f"{topic_name}-pred", "--metrics-topic", f"{topic_name}-metrics",
        "--dead-letter-topic", f"{topic_name}-dlq", "--max-events", str(len(records)),
        "--summary-json", str(summary), "--timeout", "400",
        timeout=500,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    tasks = json.loads(summary.read_text())["tasks"]

    better_than_scaled = []
    for name in datasets.SEPARATING:
        xs, ys = rows[name]
        ys = np.array(ys)
        assert tasks[name]["count"] == len(ys)
        plain, scaled = river(xs, ys, scaled=False), river(xs, ys, scaled=True)
        ours = tasks[name]["auc"]
        print(f"{name}: streamshard {ours:.4f}, River LR {plain:.4f}, SS|LR {scaled:.4f}")
        assert ours >= plain, (name, ours, plain)
        better_than_scaled.append(ours >= scaled)
    assert any(better_than_scaled)

    # the exported scikit-learn pipeline (the centring folded into the intercept) scores
    # as the streamed model does: the updates' raw weights minus the shards' offsets
    updates = [decode_update(r.value) for r in read_records(kafka, f"{topic_name}-updates")]
    snapshots = {s.task: s for s in from_updates(updates, BITS)}
    for name in datasets.SEPARATING:
        replica, offsets = Replica(), {}
        for u in updates:
            if u.task == name:
                replica.assign(u.indices, u.values)
                offsets[u.shard] = u.offset
        assert any(offsets.values()), name  # numeric features: the centring is not zero
        xs = rows[name][0]
        streamed = predict_proba(*hash_batch(xs, BITS), replica.lookup, BITS,
                                 -sum(offsets.values()))  # fmt: skip
        exported = to_sklearn(snapshots[name].weights, BITS).predict_proba(xs)[:, 1]
        np.testing.assert_allclose(exported, streamed, rtol=1e-9, atol=1e-12)
