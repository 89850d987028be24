"""The training job on a real standalone cluster survives kill -9 of two TaskManagers and of
a Python worker: it recovers by itself, every event is predicted exactly once (committed view)
and every push is applied exactly once per shard; the recovery times are measured. The
validate job survives kill -9 of its TaskManager with every record once in its outputs, the
serve job kill -9 of its Python worker and of its TaskManager with every request answered once.

The final AUC must be within 0.01 of an undisturbed run's on the same events. The undisturbed
run here is the local reference (`train --engine local`: the same learner, sequential, run
beside the cluster job on the other core): a second cluster run would add minutes to
`make test`, and `test_train.py`'s 240,000-event async test shows an undisturbed job within
0.01 AUC of that reference. 100,000 events, so that `make test` stays near its budget.
"""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from connectors.admin import create_topics, read_records
from connectors.messages import decode_update
from flink_jobs.procs import descendants
from tests.cli_helpers import SCRIPT, standalone_cluster, streamshard
from tests.txn import committed_records

pytestmark = [pytest.mark.cluster, pytest.mark.kafka]

REST_PORT = 18082
EVENTS = 100_000
FEED_RATE = 1_000  # events/s: 100 s of stream, and the three kills and recoveries fit in it


@pytest.fixture(scope="module")
def kafka():
    """A broker of this module's own: its long runs then do not share the embedded broker's
    memory-only storage with every earlier test's records (the CI run was slower shared)."""
    from connectors.broker import EmbeddedBroker
    from connectors.config import KafkaConfig

    with EmbeddedBroker() as running:
        yield KafkaConfig(running.bootstrap_servers)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with standalone_cluster(tmp_path_factory.mktemp("kills") / "home", REST_PORT) as env:
        yield env


def rest_json(path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{REST_PORT}{path}", timeout=10) as resp:
        return json.load(resp)


def pid_listening_on(port: int) -> int:
    """The process holding the listening TCP socket ``port`` (via /proc/net/tcp inodes)."""
    inodes = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(fd_dir.parent.name)
        except OSError:
            continue
    raise AssertionError(f"nothing listens on {port}")


def taskmanagers_of(jid: str) -> list[int]:
    """The pids of the TaskManagers running tasks of job ``jid``."""
    ids = set()
    for vertex in rest_json(f"/jobs/{jid}")["vertices"]:
        found = rest_json(f"/jobs/{jid}/vertices/{vertex['id']}/taskmanagers")["taskmanagers"]
        ids |= {t["taskmanager-id"] for t in found}
    pids = []
    for tm in sorted(ids):
        port = int(re.match(r"[^:]+:(\d+)-", tm).group(1))  # "127.0.0.1:6131-a1b2c3"
        pid = pid_listening_on(port)
        assert b"TaskManagerRunner" in Path(f"/proc/{pid}/cmdline").read_bytes()
        pids.append(pid)
    return pids


def python_workers(tm_pid: int) -> list[int]:
    """The PyFlink Python worker processes (beam_boot) a TaskManager started."""
    out = []
    for pid in descendants(tm_pid):
        try:
            if b"beam_boot" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            continue
    return out


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:  # already gone
        pass


def job_running(jid: str) -> bool:
    job = rest_json(f"/jobs/{jid}")
    return job["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in job["vertices"])


def completed_checkpoints(jid: str) -> int:
    return rest_json(f"/jobs/{jid}/checkpoints")["counts"]["completed"]


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def kill_and_recover(jid: str, pid: int) -> dict:
    """kill -9 ``pid``; seconds until the job noticed, runs every task again, and completed
    its first checkpoint after that."""
    checkpoints = completed_checkpoints(jid)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not job_running(jid), 120, "the job to notice the kill")
    noticed = time.monotonic()
    wait_for(lambda: job_running(jid), 300, "the job to run again")
    running = time.monotonic()
    wait_for(lambda: completed_checkpoints(jid) > checkpoints, 300, "a checkpoint after it")
    return {"noticed_s": round(noticed - killed, 1), "running_s": round(running - killed, 1),
            "checkpoint_s": round(time.monotonic() - killed, 1)}  # fmt: skip


def submit_job(job: str, flags: list, log: Path, cluster: dict, request):
    """``streamshard submit JOB -- FLAGS`` in the background (output to ``log``); the client
    process and the job's id once the job runs."""
    submit = subprocess.Popen(
        [SCRIPT, "submit", job, "--jobmanager", f"127.0.0.1:{REST_PORT}", "--", *flags],
        env={**os.environ, **cluster}, stdout=open(log, "w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    request.addfinalizer(submit.kill)
    jid = wait_for(
        lambda: next((j["jid"] for j in rest_json("/jobs/overview")["jobs"]
                      if j["state"] == "RUNNING" and j["name"].startswith(f"streamshard-{job}")),
                     None), 300, f"the {job} job")  # fmt: skip
    return submit, jid


def metrics_seen(kafka, topic) -> int:
    docs = [json.loads(r.value) for r in read_records(kafka, topic, timeout=2, idle=1)]
    return max((d["count"] for d in docs if d["type"] == "cumulative"), default=0)


def test_training_survives_taskmanager_and_python_worker_kills(
    cluster, kafka, topic_name, tmp_path, capsys, request
):
    source = f"{topic_name}-events"
    generate = [SCRIPT, "generate", "--events", str(EVENTS), "--seed", "8", "--partitions", "2",
                "--bootstrap-servers", kafka.bootstrap_servers]  # fmt: skip
    # the whole stream at once for the reference; the job's copy is fed at a steady pace (the
    # same seed and partitions: the same events at the same offsets), so that every kill lands
    # mid-run however fast the job trains
    out = subprocess.run([*generate, "--topic", f"{source}-all"], env={**os.environ, **cluster},
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    stop_at = re.search(r"end offsets (\S+)", out.stdout).group(1)  # no re-read of the whole topic
    reference = subprocess.Popen(  # the undisturbed reference, on the same events
        [SCRIPT, "train", "--engine", "local", "--bootstrap-servers", kafka.bootstrap_servers,
         "--input-topic", f"{source}-all", "--hash-bits", "18", "--stop-at-offsets", stop_at,
         "--batch-size", "100", "--summary-json", str(tmp_path / "reference.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    request.addfinalizer(reference.kill)

    create_topics(kafka, [source], partitions=2)  # the job starts before the feed

    def submit(run: str) -> subprocess.Popen:
        log = open(tmp_path / f"{run}.log", "w")
        return subprocess.Popen(
            [SCRIPT, "submit", "train", "--jobmanager", f"127.0.0.1:{REST_PORT}", "--",
             "--bootstrap-servers", kafka.bootstrap_servers, "--input-topic", source,
             "--updates-topic", f"{source}-{run}-updates",
             "--metrics-topic", f"{source}-{run}-metrics",
             "--predictions-topic", f"{source}-{run}-pred",
             "--dead-letter-topic", f"{source}-{run}-dlq", "--run-id", run,
             "--hash-bits", "18", "--shards", "4", "--workers", "2", "--parallelism", "1",
             "--batch-size", "100",  # as the reference's
             "--stop-at-offsets", stop_at, "--checkpoint-interval", "3000",
             "--delivery", "exactly-once", "--summary-json", str(tmp_path / f"{run}.json")],
            env={**os.environ, **cluster}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    killed = submit("killed")
    jid = wait_for(
        lambda: next((j["jid"] for j in rest_json("/jobs/overview")["jobs"]
                      if j["state"] == "RUNNING"), None), 300, "the job")  # fmt: skip
    feed_log = tmp_path / "feed.log"
    feed = subprocess.Popen([*generate, "--topic", source, "--rate", str(FEED_RATE)],
                            env={**os.environ, **cluster}, stdout=subprocess.DEVNULL,
                            stderr=open(feed_log, "w"))  # fmt: skip
    request.addfinalizer(feed.kill)

    def at_least(n):
        def check():
            assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            return metrics_seen(kafka, f"{source}-killed-metrics") >= n

        return check

    recoveries = []
    for n, victim in ((20_000, "taskmanager"), (45_000, "taskmanager"), (70_000, "python")):
        wait_for(at_least(n), 1200, f"{n} events trained")
        wait_for(lambda: completed_checkpoints(jid) > 0, 120, "a checkpoint")
        tm = taskmanagers_of(jid)[0]
        if victim == "taskmanager":
            pid = tm
            # a TaskManager killed with -9 leaves its Python workers orphaned: end them too
            for orphan in python_workers(tm):
                request.addfinalizer(lambda orphan=orphan: _kill_quietly(orphan))
            added = streamshard("cluster", "add-taskmanager", env=cluster)  # the replacement
            assert added.returncode == 0, added.stderr
        else:  # the job's Python worker (polled: a restored task starts it when it opens)
            pid = wait_for(lambda: next(iter(python_workers(taskmanagers_of(jid)[0])), None),
                           120, "the job's Python worker")  # fmt: skip
        recoveries.append({"victim": victim, "at_events": n, "mid_feed": feed.poll() is None,
                           **kill_and_recover(jid, pid)})  # fmt: skip
    assert feed.wait(timeout=300) == 0, feed_log.read_text()[-3000:]
    assert killed.wait(timeout=1500) == 0, (tmp_path / "killed.log").read_text()[-3000:]
    doc = json.loads((tmp_path / "killed.json").read_text())
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-3000:]
    calm = json.loads((tmp_path / "reference.json").read_text())["tasks"]["ctr"]
    auc = doc["tasks"]["ctr"]["auc"]
    with capsys.disabled():
        print(f"\nrecoveries {json.dumps(recoveries)}\nAUC {auc:.4f} (undisturbed local "
              f"reference {calm['auc']:.4f}), {doc['seconds']} s")  # fmt: skip
    assert doc["events"] == EVENTS
    assert calm["count"] == EVENTS and abs(auc - calm["auc"]) <= 0.01
    assert len(rest_json(f"/jobs/{jid}/exceptions")["exceptionHistory"]["entries"]) >= 3

    # every event_id exactly once in the committed predictions
    preds = committed_records(kafka, f"{source}-killed-pred", count=EVENTS + 1, timeout=300, idle=5)
    ids = [json.loads(r.value)["event_id"] for r in preds]
    assert len(ids) == len(set(ids)) == EVENTS
    assert set(ids) == {f"e-{i:09d}" for i in range(EVENTS)}  # the generated ids, none other
    with capsys.disabled():  # staleness along the run (predictions in commit order)
        stale = [json.loads(r.value)["staleness"] for r in preds]
        print("staleness p50/max per 50,000:", [
            (sorted(part)[len(part) // 2], max(part))
            for part in (stale[i : i + 50_000] for i in range(0, len(stale), 50_000))])  # fmt: skip

    # every (worker, clock) push applied exactly once by every shard: each shard's last
    # update counts the pushes in its state, and they are all the workers' clocks
    final = {}
    for record in read_records(kafka, f"{source}-killed-updates", timeout=300, idle=5):
        update = decode_update(record.value)
        final[update.shard] = update
    assert sorted(final) == [0, 1, 2, 3]
    clocks = {tuple(json.loads(r.value)[k] for k in ("worker", "clock")) for r in preds}
    last = {w: max(c for ww, c in clocks if ww == w) for w, _ in clocks}
    for w, top in last.items():  # each worker's clocks contiguous: no lost or repeated step
        assert {c for ww, c in clocks if ww == w} == set(range(top + 1)), w
    for update in final.values():
        assert update.pushes_applied == len(clocks)
        assert update.clock == last


VALIDATE_EVENTS = 30_000


def test_validate_survives_a_taskmanager_kill(cluster, kafka, topic_name, tmp_path, request):
    """kill -9 of the TaskManager running `validate` mid-stream: the job recovers by itself,
    and the committed outputs hold every valid event once and every bad record once, read
    until the topics are idle."""
    from connectors.errors import DecodeError
    from connectors.events import decode_event

    source, out, dlq = (f"{topic_name}-{s}" for s in ("in", "valid", "dlq"))
    generate = [SCRIPT, "generate", "--events", str(VALIDATE_EVENTS), "--seed", "9",
                "--partitions", "2", "--malformed", "0.02",
                "--bootstrap-servers", kafka.bootstrap_servers]  # fmt: skip
    # the whole stream at once, for its end offsets and as the oracle; the job's copy is fed
    # at a steady pace (the same seed: the same records at the same offsets)
    whole = subprocess.run([*generate, "--topic", f"{source}-all"], env={**os.environ, **cluster},
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert whole.returncode == 0, whole.stderr
    stop_at = re.search(r"end offsets (\S+)", whole.stdout).group(1)
    create_topics(kafka, [source], partitions=2)
    submit, jid = submit_job(
        "validate",
        ["--bootstrap-servers", kafka.bootstrap_servers, "--input-topic", source,
         "--output-topic", out, "--dead-letter-topic", dlq, "--parallelism", "1",
         "--checkpoint-interval", "2000", "--delivery", "exactly-once",
         "--stop-at-offsets", stop_at],
        tmp_path / "validate.log", cluster, request,
    )  # fmt: skip
    feed = subprocess.Popen([*generate, "--topic", source, "--rate", str(FEED_RATE)],
                            env={**os.environ, **cluster}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    request.addfinalizer(feed.kill)

    def written(n):
        def check():
            assert submit.poll() is None, (tmp_path / "validate.log").read_text()[-3000:]
            return len(read_records(kafka, out, timeout=2, idle=1, committed_only=False)) >= n

        return check

    wait_for(written(8_000), 300, "8,000 valid events written")
    wait_for(lambda: completed_checkpoints(jid) > 0, 120, "a checkpoint")
    tm = taskmanagers_of(jid)[0]
    for orphan in python_workers(tm):
        request.addfinalizer(lambda orphan=orphan: _kill_quietly(orphan))
    added = streamshard("cluster", "add-taskmanager", env=cluster)
    assert added.returncode == 0, added.stderr
    assert feed.poll() is None, "the feed ended before the kill"
    recovery = kill_and_recover(jid, tm)
    _, feed_err = feed.communicate(timeout=300)
    assert feed.returncode == 0, feed_err[-3000:]
    assert submit.wait(timeout=600) == 0, (tmp_path / "validate.log").read_text()[-3000:]
    assert len(rest_json(f"/jobs/{jid}/exceptions")["exceptionHistory"]["entries"]) >= 1
    print(f"\nvalidate recovery {json.dumps(recovery)}")

    good, bad = set(), 0
    for record in read_records(kafka, f"{source}-all", count=VALIDATE_EVENTS, timeout=60):
        try:
            good.add(decode_event(record.value).event_id)
        except DecodeError:
            bad += 1
    assert len(good) + bad == VALIDATE_EVENTS and bad > 100
    valid = committed_records(kafka, out, count=len(good) + 1, timeout=300, idle=5)
    dead = committed_records(kafka, dlq, count=bad + 1, timeout=120, idle=5)
    ids = [json.loads(r.value)["event_id"] for r in valid]
    assert len(ids) == len(set(ids)), "an event written twice"
    assert set(ids) == good
    assert len(dead) == bad and all(json.loads(r.value)["reason"] for r in dead)


SERVE_REQUESTS = 30_000
SERVE_RATE = 500  # requests/s: 60 s of load, and both kills and recoveries fit in it
SERVE_BITS = 12


def test_serve_survives_python_worker_and_taskmanager_kills(
    cluster, kafka, topic_name, tmp_path, capsys, request
):
    """`serve` on the cluster in process mode, exactly-once, under a steady load from
    `generate --requests`: kill -9 of its Python worker, then of its TaskManager. The job
    recovers by itself; read until the topics are idle, the committed predictions answer
    every request sent exactly once, each with the snapshot's score, and nothing is
    dead-lettered. (`serve` runs in thread mode by default, where the Python worker is the
    TaskManager: process mode gives each its own kill.)"""
    import numpy as np

    from connectors.hashing import hash_batch
    from connectors.messages import ModelUpdate
    from operators.logistic import dimension, sigmoid
    from operators.snapshot import from_updates, save

    req, upd, pred, dlq = (f"{topic_name}-{s}" for s in ("req", "upd", "pred", "dlq"))
    # one partition: --max-events N then bounds the run before any request is sent
    create_topics(kafka, [req, upd, pred, dlq], partitions=1)
    weights = np.random.default_rng(5).normal(size=dimension(SERVE_BITS)) * 0.3
    model = ModelUpdate("run-k", "ctr", 0, 1, {"w": 1}, np.arange(weights.size), weights,
                        ts=int(time.time() * 1000))  # fmt: skip
    (snap,) = from_updates([model], SERVE_BITS)
    save(snap, tmp_path / "models")

    submit, jid = submit_job(
        "serve",
        ["--bootstrap-servers", kafka.bootstrap_servers, "--requests-topic", req,
         "--updates-topic", upd, "--predictions-topic", pred, "--dead-letter-topic", dlq,
         "--hash-bits", str(SERVE_BITS), "--init-model", str(tmp_path / "models"),
         "--execution-mode", "process", "--parallelism", "1",
         "--delivery", "exactly-once", "--checkpoint-interval", "2000",
         "--max-events", str(SERVE_REQUESTS), "--timeout", "900"],
        tmp_path / "serve.log", cluster, request,
    )  # fmt: skip
    feed = subprocess.Popen(
        [SCRIPT, "generate", "--requests", str(SERVE_REQUESTS), "--rate", str(SERVE_RATE),
         "--seed", "12", "--topic", req, "--bootstrap-servers", kafka.bootstrap_servers],
        env={**os.environ, **cluster}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    request.addfinalizer(feed.kill)

    def answered(n):
        def check():
            assert submit.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            return len(read_records(kafka, pred, timeout=2, idle=1, committed_only=False)) >= n

        return check

    recoveries = []
    for n, victim in ((6_000, "python"), (15_000, "taskmanager")):
        wait_for(answered(n), 300, f"{n} requests answered")
        wait_for(lambda: completed_checkpoints(jid) > 0, 120, "a checkpoint")
        tm = taskmanagers_of(jid)[0]
        workers = python_workers(tm)
        assert workers, "no Python worker: the job is not in process mode"
        for orphan in workers:  # a TaskManager killed with -9 leaves them behind
            request.addfinalizer(lambda orphan=orphan: _kill_quietly(orphan))
        if victim == "taskmanager":
            added = streamshard("cluster", "add-taskmanager", env=cluster)  # the replacement
            assert added.returncode == 0, added.stderr
        pid = workers[0] if victim == "python" else tm
        recoveries.append({"victim": victim, "at_answers": n, "mid_feed": feed.poll() is None,
                           **kill_and_recover(jid, pid)})  # fmt: skip
    _, feed_err = feed.communicate(timeout=300)
    assert feed.returncode == 0, feed_err[-3000:]
    assert submit.wait(timeout=600) == 0, (tmp_path / "serve.log").read_text()[-3000:]
    with capsys.disabled():
        print(f"\nserve recoveries {json.dumps(recoveries)}")
    assert all(r["mid_feed"] for r in recoveries), recoveries
    assert len(rest_json(f"/jobs/{jid}/exceptions")["exceptionHistory"]["entries"]) >= 2

    sent = {}
    for record in read_records(kafka, req, count=SERVE_REQUESTS, timeout=120):
        doc = json.loads(record.value)
        sent[doc["event_id"]] = doc
    assert len(sent) == SERVE_REQUESTS
    records = committed_records(kafka, pred, count=SERVE_REQUESTS + 1, timeout=300, idle=5)
    committed = [json.loads(r.value) for r in records]
    written = read_records(kafka, pred, count=2 * SERVE_REQUESTS, timeout=30, idle=3,
                           committed_only=False)  # fmt: skip
    assert len(written) > SERVE_REQUESTS, "no kill came after answers it could have doubled"
    ids = [p["event_id"] for p in committed]
    assert len(ids) == len(set(ids)), "a request answered twice"
    assert set(ids) == set(sent), "a request lost"
    assert not committed_records(kafka, dlq, 1, timeout=5, idle=2)
    indptr, indices, values = hash_batch([sent[i]["features"] for i in ids], SERVE_BITS)
    margins = [weights[indices[lo:hi]] @ values[lo:hi] + weights[-1]
               for lo, hi in zip(indptr[:-1], indptr[1:], strict=True)]  # fmt: skip
    scores = np.array([p["score"] for p in committed])
    assert np.abs(scores - sigmoid(np.array(margins))).max() <= 1e-9
    assert {(p["model_run"], p["model_version"]) for p in committed} == {("run-k", 1)}
