"""A real local standalone cluster (JobManager + TaskManager processes): start, submit a job
with `flink run -py`, list it, and check that nothing listens beyond loopback."""

import json
import socket

import pytest

from connectors.admin import create_topics, produce, read_records
from connectors.synthetic import CtrSettings, CtrStream, encode
from tests.cli_helpers import streamshard

pytestmark = [pytest.mark.cluster, pytest.mark.kafka]

REST_PORT = 18081


def listening_ports() -> dict[int, set[str]]:
    """Port -> local addresses of every listening TCP socket (from /proc/net/tcp and tcp6)."""
    out: dict[int, set[str]] = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in open(f"/proc/net/{name}").read().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(addr_hex)
            if family == socket.AF_INET:
                addr = socket.inet_ntop(family, raw[::-1])
            else:
                words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                addr = socket.inet_ntop(family, b"".join(words))
            out.setdefault(int(port_hex, 16), set()).add(addr)
    return out


@pytest.fixture
def cluster(tmp_path):
    env = {"STREAMSHARD_HOME": str(tmp_path / "home")}
    out = streamshard(
        "cluster", "start", "--taskmanagers", "1", "--rest-port", str(REST_PORT), env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    try:
        yield env
    finally:
        streamshard("cluster", "stop", env=env)


def test_submit_a_job_to_the_standalone_cluster(cluster, kafka, topic_name, tmp_path):
    status = streamshard("cluster", "status", env=cluster)
    assert status.returncode == 0 and "1 TaskManagers" in status.stdout, status.stderr
    # REST and RPC listen on loopback only
    ports = listening_ports()
    for port in (REST_PORT, 6123):
        assert ports.get(port), f"nothing listens on {port}"
        assert ports[port] <= {"127.0.0.1", "::ffff:127.0.0.1"}, ports[port]

    docs = [doc for doc, _ in CtrStream(CtrSettings(events=1000, seed=3)).events()]
    create_topics(kafka, [topic_name])
    produce(kafka, topic_name, [(d["event_id"].encode(), encode(d)) for d in docs])
    produce(kafka, topic_name, [(None, b"{not json")])
    out = streamshard(
        "submit", "validate", "--jobmanager", f"127.0.0.1:{REST_PORT}", "--",
        "--bootstrap-servers", kafka.bootstrap_servers, "--input-topic", topic_name,
        "--output-topic", f"{topic_name}-valid", "--dead-letter-topic", f"{topic_name}-dlq",
        "--stop-at-offsets", "0=1001",
        env=cluster, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    valid = read_records(kafka, f"{topic_name}-valid", count=1000, timeout=30)
    assert sorted(json.loads(r.value)["event_id"] for r in valid) == [d["event_id"] for d in docs]
    dead = read_records(kafka, f"{topic_name}-dlq", count=1, timeout=30)
    assert json.loads(dead[0].value)["reason"].startswith("invalid JSON")

    listed = streamshard("jobs", "list", "--jobmanager", f"127.0.0.1:{REST_PORT}", env=cluster)
    assert "FINISHED   streamshard-validate" in listed.stdout, listed.stdout + listed.stderr
