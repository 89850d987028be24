"""A real local standalone cluster (JobManager + TaskManager processes): start, submit a job
with `flink run -py`, list it, check that nothing listens beyond loopback; stop the training
job with a savepoint and resume it at another parallelism with its state intact."""

import json
import re
import socket
import time

import pytest

from connectors.admin import create_topics, produce, read_records
from operators.synthetic import CtrSettings, CtrStream, encode
from tests.cli_helpers import standalone_cluster, streamshard

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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with standalone_cluster(tmp_path_factory.mktemp("cluster") / "home", REST_PORT) as env:
        yield env


def test_submit_a_job_to_the_standalone_cluster(cluster, kafka, topic_name, tmp_path):
    status = streamshard("cluster", "status", env=cluster)
    assert status.returncode == 0 and "2 TaskManagers" in status.stdout, status.stderr
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


# ---- savepoints and rescaling -----------------------------------------------------------


class Digests:
    """Follows the --digest-topic: every record in order, and each key's latest."""

    def __init__(self, kafka, topic):
        from connectors.admin import consumer

        self.consumer = consumer(kafka, topic, committed_only=False)
        self.records: list[dict] = []

    def poll(self) -> list[dict]:
        for batch in self.consumer.poll(timeout_ms=300).values():
            self.records.extend(json.loads(r.value) for r in batch)
        return self.records

    def latest(self, records=None) -> dict:
        return {(d["kind"], d["key"]): d for d in (self.records if records is None else records)}


def metrics_count(kafka, topic, run) -> int:
    docs = [json.loads(r.value) for r in read_records(kafka, topic, timeout=2, idle=1)]
    counts = [d["count"] for d in docs if d.get("run") == run and d["type"] == "cumulative"]
    return max(counts, default=0)


def wait_quiet(
    kafka, digests: Digests, metrics_topic, run, events, workers, shards, since=0, timeout=180
):
    """Poll until every event is counted by the evaluator, every shard and worker of the job
    has said how it found its state (a ``first`` digest after record ``since``), and the
    parameter server is at rest: each shard applied every worker's pushes (version == sum of
    the workers' clocks) and each worker applied every shard's updates (applied == sum of the
    shard versions). Without the ``first`` digests, the previous job's last digests (at rest)
    and the new job's count could pass for the new job at rest before it wrote a digest."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counted = metrics_count(kafka, metrics_topic, run)
        latest = digests.latest(digests.poll())
        found = {(d["kind"], d["key"]) for d in digests.records[since:] if d["when"] == "first"}
        ws = [v for (kind, _), v in latest.items() if kind == "worker"]
        ss = [v for (kind, _), v in latest.items() if kind == "shard"]
        if len(ws) == workers and len(ss) == shards and len(found) == workers + shards:
            clocks = sum(w["clock"] for w in ws)
            versions = sum(s["version"] for s in ss)
            if (
                all(s["version"] == clocks for s in ss)
                and all(w.get("applied") == versions for w in ws)
                and counted == events
            ):
                return latest
    raise AssertionError(f"not at rest after {timeout}s: {digests.latest()}")


def submit_train(cluster, kafka, topics, parallelism, savepoint=None) -> str:
    out = streamshard(
        "submit", "train", "--jobmanager", f"127.0.0.1:{REST_PORT}", "--detached",
        *(["--from-savepoint", savepoint] if savepoint else []), "--",
        "--bootstrap-servers", kafka.bootstrap_servers, "--input-topic", topics["in"],
        "--updates-topic", topics["updates"], "--metrics-topic", topics["metrics"],
        "--predictions-topic", topics["pred"], "--dead-letter-topic", topics["dlq"],
        "--digest-topic", topics["digests"], "--run-id", "rescale", "--hash-bits", "14",
        "--shards", "4", "--workers", "2", "--window", "1000", "--parallelism", str(parallelism),
        "--checkpoint-interval", "2000",
        env=cluster, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    found = re.search(r"JobID ([0-9a-f]{32})", out.stdout + out.stderr)
    assert found, out.stdout[-2000:]
    return found.group(1)


def stop_with_savepoint(cluster, job_id) -> str:
    out = streamshard(
        "jobs", "stop-with-savepoint", job_id, "--jobmanager", f"127.0.0.1:{REST_PORT}",
        env=cluster,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().rsplit("savepoint ", 1)[1]


def test_savepoint_and_rescale_keep_the_state(cluster, kafka, topic_name):
    topics = {n: f"{topic_name}-{n}" for n in ("in", "updates", "metrics", "pred", "dlq")}
    topics["digests"] = f"{topic_name}-digests"
    create_topics(kafka, [topics["in"]], partitions=2)
    create_topics(kafka, [topics["digests"]])
    docs = [doc for doc, _ in CtrStream(CtrSettings(events=6000, seed=11)).events()]

    def feed(part):
        produce(kafka, topics["in"], [(d["event_id"].encode(), encode(d)) for d in part])

    digests = Digests(kafka, topics["digests"])
    feed(docs[:2000])
    job = submit_train(cluster, kafka, topics, parallelism=2)
    before = wait_quiet(kafka, digests, topics["metrics"], "rescale", 2000, 2, 4)
    savepoint = stop_with_savepoint(cluster, job)
    for step, (parallelism, events) in enumerate([(4, 4000), (2, 6000)]):
        mark = len(digests.poll())
        feed(docs[events - 2000 : events])
        job = submit_train(cluster, kafka, topics, parallelism, savepoint)
        after = wait_quiet(kafka, digests, topics["metrics"], "rescale", events, 2, 4, mark)
        restored = [d for d in digests.records[mark:] if d["when"] == "first"]
        # every shard and worker came back once, in another process, with the state it had
        assert sorted((d["kind"], d["key"]) for d in restored) == sorted(before), step
        for d in restored:
            last = before[d["kind"], d["key"]]
            assert d["pid"] != last["pid"], d
            assert d["digest"] == last["digest"], (d, last)
            # training continued from there
            moved = after[d["kind"], d["key"]]
            assert moved["clock" if d["kind"] == "worker" else "version"] > last.get(
                "clock" if d["kind"] == "worker" else "version"
            )
        before = after
        savepoint = stop_with_savepoint(cluster, job)
    # the evaluator's state came through too: each event counted once over three jobs
    assert metrics_count(kafka, topics["metrics"], "rescale") == 6000


# ---- secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "train"])
def test_no_secret_reaches_a_log_the_job_config_or_a_command_line(
    cluster, kafka, topic_name, tmp_path, command
):
    import os
    import subprocess
    import urllib.request
    from pathlib import Path

    from tests.cli_helpers import SCRIPT

    secret = "Zq7-not-a-real-password-" + topic_name[-8:]
    props = tmp_path / "kafka.properties"
    # PLAINTEXT, as the embedded broker speaks no SASL: the clients accept and ignore the SASL
    # settings, so the secret travels every path a real one would and the job still runs
    props.write_text(
        "security.protocol=PLAINTEXT\nsasl.mechanism=PLAIN\n"
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="streamshard" password="{secret}";\n'
        f"ssl.key.password={secret}\nclient.id=secret-test-{topic_name[-8:]}\n"
    )
    docs = [doc for doc, _ in CtrStream(CtrSettings(events=300, seed=5)).events()]
    create_topics(kafka, [topic_name])
    produce(kafka, topic_name, [(d["event_id"].encode(), encode(d)) for d in docs])
    outputs = {  # each job's own topics; the output holds one record per event
        "validate": ["--output-topic", f"{topic_name}-valid"],
        "train": ["--predictions-topic", f"{topic_name}-valid", "--hash-bits", "14",
                  "--updates-topic", f"{topic_name}-updates", "--run-id", topic_name[-8:],
                  "--metrics-topic", f"{topic_name}-metrics"],
    }  # fmt: skip
    job = subprocess.Popen(
        [SCRIPT, "submit", command, "--jobmanager", f"127.0.0.1:{REST_PORT}", "--",
         "--bootstrap-servers", kafka.bootstrap_servers, "--kafka-properties-file", str(props),
         "--input-topic", topic_name, *outputs[command],
         "--dead-letter-topic", f"{topic_name}-dlq", "--stop-at-offsets", "0=300"],
        env={**os.environ, **cluster}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    # every process's command line, read again and again while the job is submitted and runs
    scans = 0
    while job.poll() is None:
        # os.listdir, not Path.glob: glob stats each entry, and a process that ends between
        # the listing and the stat raises from inside the glob
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes(), pid
            except OSError:
                pass  # the process ended meanwhile
        scans += 1
    client_output = job.stdout.read().decode()
    assert job.returncode == 0, client_output[-3000:]
    assert scans > 5
    assert len(read_records(kafka, f"{topic_name}-valid", count=300, timeout=30)) == 300
    assert secret not in client_output

    base = f"http://127.0.0.1:{REST_PORT}"
    (job_id,) = [
        j["jid"]
        for j in json.load(urllib.request.urlopen(f"{base}/jobs/overview"))["jobs"]
        # train's driver cancels the job once every event is counted (its feedback source
        # never ends)
        if j["name"] == f"streamshard-{command}" and j["state"] in ("FINISHED", "CANCELED")
    ][-1:]
    for path in (f"/jobs/{job_id}/config", f"/jobs/{job_id}", f"/jobs/{job_id}/plan",
                 "/jobmanager/config", f"/jobs/{job_id}/checkpoints/config"):  # fmt: skip
        body = urllib.request.urlopen(base + path).read().decode()
        assert secret not in body, path

    logs = list((Path(cluster["STREAMSHARD_HOME"]) / "cluster" / "log").rglob("*"))
    logs = [p for p in logs if p.is_file()]
    assert any("-taskexecutor-" in p.name for p in logs) and any("client" in p.name for p in logs)
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    # the properties did reach Flink's Kafka clients (their config is logged, secrets hidden)
    assert f"client.id = secret-test-{topic_name[-8:]}" in text
    assert "sasl.jaas.config = [hidden]" in text
    leaks = [p.name for p in logs if secret in p.read_text(errors="replace")]
    assert not leaks, leaks
