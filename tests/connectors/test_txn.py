"""The marker-reading committed view (tests/txn.py) that the cluster kill test relies on."""

import pytest
from kafka import KafkaProducer

from connectors.admin import create_topics
from tests.txn import committed_records

pytestmark = pytest.mark.kafka


def test_committed_records_leave_out_aborted_and_open_transactions(kafka, topic_name):
    create_topics(kafka, [topic_name])
    plain = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    plain.send(topic_name, b"plain-0")
    plain.flush()
    tx = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, transactional_id=topic_name)
    tx.init_transactions()
    for tag, end in (("c1", "commit"), ("a", "abort"), ("c2", "commit"), ("open", None)):
        tx.begin_transaction()
        for i in range(3):
            tx.send(topic_name, f"{tag}-{i}".encode())
            plain.send(topic_name, f"plain-{tag}-{i}".encode())  # interleaved, not transactional
        tx.flush()
        plain.flush()
        if end == "commit":
            tx.commit_transaction()
        elif end == "abort":
            tx.abort_transaction()
    got = [r.value.decode() for r in committed_records(kafka, topic_name, count=100, idle=2)]
    assert sorted(got) == sorted(
        ["plain-0", *(f"plain-{t}-{i}" for t in ("c1", "a", "c2", "open") for i in range(3)),
         *(f"{t}-{i}" for t in ("c1", "c2") for i in range(3))]
    )  # fmt: skip
    tx.close(timeout=1)
    plain.close()
