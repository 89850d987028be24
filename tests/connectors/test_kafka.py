"""Against the embedded broker over TCP: clients, topic admin, the broker's own lifecycle."""

import json
import socket
import time

import pytest

from connectors.admin import create_topics, delete_topics, list_topics, produce, read_records
from connectors.broker import EmbeddedBroker
from connectors.config import KafkaConfig
from connectors.errors import BrokerError, KafkaUnavailable
from tests.cli_helpers import streamshard

pytestmark = pytest.mark.kafka

# 7 kB update records, about 110 MB: a 1,000,000-event run's updates partition grows to 150 MB;
# with a 5 ms wait, 56 MB still got its records here, 98 MB no longer did
LONG_PARTITION_RECORDS = 16_000


def test_produce_and_read_round_trip(kafka, topic_name):
    create_topics(kafka, [topic_name], partitions=3)
    records = [(f"k{i}".encode(), json.dumps({"i": i}).encode()) for i in range(500)]
    ends = produce(kafka, topic_name, records)
    assert sum(ends.values()) == 500 and set(ends) <= {0, 1, 2}
    got = read_records(kafka, topic_name, count=500, timeout=30)
    assert sorted(json.loads(r.value)["i"] for r in got) == list(range(500))
    assert {r.key for r in got} == {k for k, _ in records}


def test_topic_admin_is_idempotent(kafka, topic_name):
    names = [f"{topic_name}-a", f"{topic_name}-b"]
    assert create_topics(kafka, names, partitions=2) == names
    assert create_topics(kafka, names) == []
    assert set(names) <= set(list_topics(kafka))
    assert delete_topics(kafka, names) == names
    assert not set(names) & set(list_topics(kafka))


def test_unreachable_broker_is_one_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(KafkaUnavailable, match=f"cannot reach Kafka at 127.0.0.1:{port}"):
            list_topics(KafkaConfig(f"127.0.0.1:{port}"))


def test_taken_port_is_refused_with_its_cause(broker):
    with pytest.raises(BrokerError, match=f"port {broker.port} on 127.0.0.1 is taken"):
        EmbeddedBroker(port=broker.port).start()


def test_missing_binary_is_refused_with_its_cause(monkeypatch):
    monkeypatch.setenv("CALF_TANSU_BIN", "/nonexistent/tansu")
    with pytest.raises(BrokerError, match="embedded broker binary not found"):
        EmbeddedBroker().start()


def test_generate_then_tail_through_the_cli(kafka, topic_name, tmp_path):
    truth = tmp_path / "truth.json"
    env = {"STREAMSHARD_BOOTSTRAP": kafka.bootstrap_servers}
    out = streamshard(
        "generate",
        "--events",
        "3000",
        "--topic",
        topic_name,
        "--seed",
        "7",
        "--truth",
        str(truth),
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "wrote 3,000 events" in out.stdout and "end offsets 0=3000" in out.stdout
    report = json.loads(truth.read_text())
    assert report["events"] == 3000 and 0.5 < report["auc"] < 1.0

    out = streamshard("tail", "--topic", topic_name, "-n", "5", "--head", env=env)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [d["event_id"] for d in lines] == [f"e-{i:09d}" for i in range(5)]

    out = streamshard("tail", "--topic", topic_name, "-n", "2", "--with-meta", env=env)
    assert [json.loads(x)["offset"] for x in out.stdout.splitlines()] == [2998, 2999]


def test_broker_commands_start_status_stop(tmp_path):
    env = {"STREAMSHARD_HOME": str(tmp_path / "state")}
    started = streamshard("broker", "start", env=env)
    assert started.returncode == 0, started.stderr
    try:
        assert "broker running at 127.0.0.1:" in started.stdout
        assert streamshard("broker", "status", env=env).returncode == 0
        again = streamshard("broker", "start", env=env)
        assert again.returncode == 2 and "already running" in again.stderr
        # commands find the running broker without flags
        topics = streamshard("topics", "create", "from-state-file", env=env)
        assert topics.returncode == 0 and "from-state-file" in topics.stdout
    finally:
        stopped = streamshard("broker", "stop", env=env)
    assert stopped.returncode == 0 and "broker stopped" in stopped.stdout
    status = streamshard("broker", "status", env=env)
    assert status.returncode == 1 and "not running" in status.stdout


def test_feedback_fetch_wait_gets_new_records_at_the_tail_of_a_long_partition(kafka, topic_name):
    """The workers wait at the tail of the model-updates topic for the next update, with
    the feedback edges' fetch wait. Over a 1,000,000-event run that partition grows to about
    150 MB; with a 5 ms wait the embedded broker then answered none of those fetches (the run
    stalled at 490,000 events). With the jobs' setting each new record must still arrive."""
    from kafka import KafkaConsumer, TopicPartition

    from connectors.flink_kafka import FEEDBACK_FETCH_MAX_WAIT_MS

    create_topics(kafka, [topic_name])
    update = b"u" * 7_000  # the size of an update record in the bench's 1,000,000-event run
    end = produce(kafka, topic_name, [(None, update)] * LONG_PARTITION_RECORDS)[0]
    tail = KafkaConsumer(
        **kafka.kafka_python_kwargs(),
        enable_auto_commit=False,
        fetch_max_wait_ms=int(FEEDBACK_FETCH_MAX_WAIT_MS),
    )
    part = TopicPartition(topic_name, 0)
    tail.assign([part])
    tail.seek(part, end)
    try:
        for i in range(5):
            produce(kafka, topic_name, [(None, f"update {i}".encode())])
            got, deadline = [], time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                got = [r.value for recs in tail.poll(timeout_ms=200).values() for r in recs]
            assert got == [f"update {i}".encode()], f"update {i} did not arrive within 10 s"
    finally:
        tail.close()


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_tls_against_a_plaintext_broker_fails_in_seconds_naming_the_cause(kafka, protocol):
    t0 = time.monotonic()
    out = streamshard("topics", "list", "--bootstrap-servers", kafka.bootstrap_servers,
                      "--kafka-property", f"security.protocol={protocol}", timeout=60)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert time.monotonic() - t0 < 20
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"security.protocol={protocol}" in out.stderr and "PLAINTEXT" in out.stderr


def test_generate_now_stamps_the_send_time(kafka, topic_name):
    before = int(time.time() * 1000)
    out = streamshard("generate", "--bootstrap-servers", kafka.bootstrap_servers, "--topic",
                      topic_name, "--events", "20", "--now")  # fmt: skip
    assert out.returncode == 0, out.stderr
    stamps = [json.loads(r.value)["ts"] for r in read_records(kafka, topic_name, count=20)]
    assert len(stamps) == 20 and all(before <= ts <= int(time.time() * 1000) for ts in stamps)


def test_generate_requests_is_a_steady_load_stamped_as_sent(kafka, topic_name):
    before = int(time.time() * 1000)
    out = streamshard("generate", "--bootstrap-servers", kafka.bootstrap_servers, "--topic",
                      topic_name, "--requests", "400", "--rate", "2000")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"sent 400 requests to {topic_name}"), out.stdout
    records = read_records(kafka, topic_name, count=400)
    docs = [json.loads(r.value) for r in records]
    assert len(docs) == 400 and not any("label" in d for d in docs)
    assert [r.key.decode() for r in records] == [d["event_id"] for d in docs]
    stamps = [d["ts"] for d in docs]
    assert stamps == sorted(stamps) and before <= stamps[0]
    # 400 at 2,000/s take 200 ms: paced, not sent at once
    assert 150 <= stamps[-1] - stamps[0] <= 2_000, stamps[-1] - stamps[0]


def test_tail_shows_a_binary_model_update_as_its_json(kafka, topic_name):
    import numpy as np

    from connectors.messages import ModelUpdate

    update = ModelUpdate("r-1", "ctr", 2, 5, {"ctr#0": 4}, np.array([3, 9]),
                         np.array([0.5, -1.0]), state={"z": np.array([1.0, 2.0])})  # fmt: skip
    create_topics(kafka, [topic_name])
    produce(kafka, topic_name, [(None, update.to_bytes()), (None, b"\x00SSU1 broken")])
    env = {"STREAMSHARD_BOOTSTRAP": kafka.bootstrap_servers}
    out = streamshard("tail", "--topic", topic_name, "-n", "2", env=env)
    assert out.returncode == 0, out.stderr
    shown, broken = out.stdout.splitlines()
    doc = json.loads(shown)
    assert doc["indices"] == [3, 9] and doc["state"] == {"z": [1.0, 2.0]} and doc["shard"] == 2
    assert "bad model update" in json.loads(broken)


def test_the_reported_end_offset_is_never_past_the_records(kafka, topic_name):
    from connectors.admin import end_offset_at_most

    create_topics(kafka, [topic_name])
    assert end_offset_at_most(kafka, topic_name) == 0
    written = 0
    for n in (1, 10, 100):
        written = produce(kafka, topic_name, [(None, b"x")] * n)[0]
        assert 1 <= end_offset_at_most(kafka, topic_name) <= written
