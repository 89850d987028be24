"""The end-to-end rows of the benchmark harness (``benchmarks/run.py``): which
``streamshard train`` runs it makes, each on a pre-filled topic of a fresh embedded broker,
and what it reads back from each (summary, update volume, staleness, CPU by process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks.usage import TreeUsage, per_event_us
from operators.ps import DEFAULT_BATCH_SIZE, whole_batches

SCRIPT = str(Path(sys.executable).with_name("streamshard"))
BITS = 20
# The numpy learner with the filter on this stream, at 10k / 20k / 100k events: coordinates
# sent per event (4.38 without it) and AUC cost. EPS 0.003: 2.88 / 2.56 / 1.69, cost 0.0009 /
# 0.0002 / 0.0001; EPS 0.005: 2.04 / 1.79 / 1.13, cost 0.0014 / 0.0007 / 0.0002; EPS 0.01:
# 1.08 / 0.94 / 0.55, cost 0.0056 / 0.0027 / 0.0011 (README)
FILTER_EPS = 0.005
FILTER_EVENTS = 20_000  # the filter pair's stream (at most the whole stream)
# the KKT pair (decision 0019): unstandardized FTRL with L1, without and with --kkt-filter;
# on 20,000 events that model's AUC moves by +-0.01 either way with the filter, so longer
KKT_L1, KKT_EVENTS = 1.5, 100_000


@contextmanager
def fresh_broker(lines: list[bytes], topic: str):
    """A new embedded broker holding ``lines`` in one partition of ``topic`` (the broker slows
    as topics accumulate on it, so each long run gets its own; see the platform notes)."""
    from connectors.admin import create_topics, produce
    from connectors.broker import EmbeddedBroker
    from connectors.config import KafkaConfig

    with EmbeddedBroker() as broker:
        kafka = KafkaConfig(broker.bootstrap_servers)
        create_topics(kafka, [topic], partitions=1)  # one partition: the stream's order
        produce(kafka, topic, [(None, v) for v in lines])  # before any clock starts
        yield kafka, broker.process.pid


CLUSTER_REST_PORT = 18181


def cluster_pids(home: Path) -> list[int]:
    """The standalone cluster's JobManager and TaskManager processes (Flink's pid files)."""
    pids = []
    for pid_file in (home / "cluster" / "pid").glob("*.pid"):
        pids += [int(p) for p in pid_file.read_text().split() if Path(f"/proc/{p}").exists()]
    return pids


def end_to_end(kafka, topic: str, events: int, cfg: dict, tmp: str, broker_pid: int) -> dict:
    """One ``streamshard train`` run on the pre-filled ``topic`` (on the mini-cluster, or with
    ``cfg["cluster"]`` submitted to the local standalone cluster); summary plus update volume
    and staleness read back from its topics."""
    tag = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{topic}-{cfg['label']}")
    summary_path = Path(tmp) / f"{tag}.json"
    home = Path(tmp) / "cluster-home"
    cmd = _train_command(kafka, topic, events, cfg, tag, tmp) + [
        "--summary-json", str(summary_path)]  # fmt: skip
    env = {**os.environ, "STREAMSHARD_HOME": str(home)}
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    more = (lambda: cluster_pids(home)) if cfg.get("cluster") else list
    usage = TreeUsage(job.pid, more, broker_pid)
    _, err = job.communicate()
    used = usage.stop()
    if job.returncode != 0:
        return {**cfg, "error": (err.strip().splitlines() or ["?"])[-1][:300]}
    if not summary_path.exists():  # under `flink run` a failure may still exit 0
        return {**cfg, "error": (err.strip().splitlines() or ["no summary"])[-1][:300]}
    summary = json.loads(summary_path.read_text())
    task = summary["tasks"]["ctr"]
    row = {
        **cfg,
        "events": summary["events"],
        "seconds": summary["seconds"],
        "events_per_s": summary["events_per_s"],
        "steady_events_per_s": task["events_per_s"],
        "auc": task["auc"],
        "log_loss": task["log_loss"],
        "pushed_per_event": task.get("pushed_per_event"),
        "peak_rss_mib": used["peak_rss_mib"],
        "cpu_us_per_event": per_event_us(used["cpu_s"], summary["events"]),
    }
    return {**row, **_updates_read_back(kafka, tag, summary["events"]),
            **_predictions_read_back(kafka, tag, summary["events"], cfg)}  # fmt: skip


def _train_command(kafka, topic: str, events: int, cfg: dict, tag: str, tmp: str) -> list:
    """The ``streamshard train`` (or ``submit train``) command of one run; its topics are
    named after ``tag``."""
    where = ["train"]
    if cfg.get("cluster"):
        where = ["submit", "train", "--jobmanager", f"127.0.0.1:{CLUSTER_REST_PORT}", "--",
                 "--parallelism", str(cfg["cluster"])]  # fmt: skip
    return [
        SCRIPT, *where, "--bootstrap-servers", kafka.bootstrap_servers,
        "--input-topic", topic, "--updates-topic", f"{tag}-upd",
        "--predictions-topic", f"{tag}-pred", "--metrics-topic", f"{tag}-met",
        "--dead-letter-topic", f"{tag}-dlq", "--hash-bits", str(BITS),
        "--workers", str(cfg["workers"]), "--shards", str(cfg["shards"]),
        "--consistency", cfg["consistency"], "--update-threshold", str(cfg.get("eps", 0.0)),
        *(["--stop-at-offsets", f"0={-(-events // cfg['batched'])}", "--input-format",
            BATCH_FORMAT, "--prediction-format", BATCH_PREDICTIONS] if cfg.get("batched")
          else ["--max-events", str(events)]),
        *(["--no-standardize", "--l1", str(cfg["l1"])] if cfg.get("l1") else []),
        *(["--kkt-filter"] if cfg.get("kkt") else []),
        "--batch-timeout", str(cfg.get("batch_timeout", 200)),
        "--checkpoint-dir", f"file://{tmp}/ckpt-{tag}", "--timeout", str(cfg["timeout"]),
    ]  # fmt: skip


def _updates_read_back(kafka, tag: str, events: int) -> dict:
    """Model-update records, bytes and coordinates per event, from the run's updates topic."""
    from connectors.admin import read_records
    from connectors.messages import decode_update

    updates = [r.value for r in read_records(kafka, f"{tag}-upd", timeout=600, idle=5)]
    coords = sum(len(decode_update(v).indices) for v in updates)
    return {
        "update_records_per_event": len(updates) / events,
        "update_bytes_per_event": sum(len(v) for v in updates) / events,
        "update_coords_per_event": coords / events,
    }


def _predictions_read_back(kafka, tag: str, events: int, cfg: dict) -> dict:
    """Staleness percentiles, and the AUC of the last tenth and of the prefix, from the run's
    prediction records."""
    from connectors.admin import read_records
    from operators.metrics import summary as metric_summary
    from operators.predictions import read_predictions

    records = read_records(kafka, f"{tag}-pred", None if cfg.get("batched") else events,
                           timeout=900, idle=10)  # fmt: skip
    preds = [p for r in records for p in read_predictions(r.value)]
    preds.sort(key=lambda p: p["event_id"])  # stream order: e-000000001, e-000000002, ...
    stale = np.array([p["staleness"] for p in preds]) if preds else np.zeros(1)
    labels = np.array([p["label"] for p in preds])
    scores = np.array([p["score"] for p in preds])
    tail = max(1, len(preds) // 10)
    last = metric_summary(labels[-tail:], scores[-tail:]) if preds else {}
    head = cfg.get("prefix", 0)
    first = metric_summary(labels[:head], scores[:head]) if 0 < head < len(preds) else {}
    return {
        "auc_last10": last.get("auc"),
        "auc_prefix": first.get("auc"),
        "log_loss_last10": last.get("log_loss"),
        "staleness": {
            "p50": float(np.percentile(stale, 50)),
            "p90": float(np.percentile(stale, 90)),
            "max": int(stale.max()),
        },
    }


BATCH_EVENTS = 1_000  # events per Kafka record in the batched run
BATCH_FORMAT = "arrow"  # the batched run's --input-format (connectors/arrow_records.py)
BATCH_PREDICTIONS = "columns"  # and its --prediction-format (operators/predictions.py)
SYNC_EVENTS = 200_000  # events of the 1 worker, 1 shard, sync run

E2E_CONFIGS = [
    {"workers": w, "shards": s, "consistency": c}
    for w in (1, 2)
    for s in (1, 4)
    for c in ("async", "bounded:2", "sync")
]


def batched_records(lines: list[bytes]) -> list[bytes]:
    """The stream as records of ``BATCH_EVENTS`` events in ``BATCH_FORMAT``."""
    import orjson

    from operators.parsing import record_encoder

    chunks = [lines[i : i + BATCH_EVENTS] for i in range(0, len(lines), BATCH_EVENTS)]
    if BATCH_FORMAT != "ndjson":
        encode = record_encoder(BATCH_FORMAT)
        return [encode(list(map(orjson.loads, chunk))) for chunk in chunks]
    return [b"\n".join(chunk) for chunk in chunks]


def end_to_end_configs(quick: bool, events: int, prefix: int) -> list[dict]:
    """The runs, each with its event count: the headline on the whole stream, the rest on
    the prefix."""

    def label(c):
        return f"{c['workers']}w {c['shards']}s {c['consistency']}"

    # the sync target's run: long enough that its rate is not its warm-up's (59 sync round
    # trips over the first 8,306 events) nor its start-up's
    one = {"workers": 1, "shards": 1, "consistency": "sync", "events": min(events, SYNC_EVENTS)}
    grid = [] if quick else [
        {**c, "events": prefix, "label": label(c)} for c in E2E_CONFIGS if c != {
            k: one[k] for k in ("workers", "shards", "consistency")}
    ]  # fmt: skip
    headline = {"workers": 2, "shards": 4, "consistency": "async", "events": events}
    # the filter pair: 1 worker, sync, mini-batches cut by count only (no batch timeout), so
    # both runs are deterministic and the AUC difference is the filter's alone (the numpy
    # learner gives the same AUCs); async runs move AUC by more than 0.002 between repeats
    # (whole mini-batches only: with no batch timeout a partial last one is never trained)
    pair_events, _ = whole_batches(min(events, max(prefix, FILTER_EVENTS)), DEFAULT_BATCH_SIZE)
    pair = {"workers": 1, "shards": 4, "consistency": "sync", "batch_timeout": 0,
            "events": pair_events}  # fmt: skip
    kkt_events, _ = whole_batches(min(events, KKT_EVENTS), DEFAULT_BATCH_SIZE)
    kkt = {**pair, "events": kkt_events, "l1": KKT_L1}
    batched = {**headline, "batched": BATCH_EVENTS, "label": f"2w 4s async, all {events:,}, "
               f"records of {BATCH_EVENTS:,} events as {BATCH_FORMAT} in, prediction batches "
               "out"}  # fmt: skip
    return [
        {**headline, "label": f"2w 4s async, all {events:,}", "headline": True},
        batched,
        {**one, "label": label(one), "one_sync": True},
        *grid,
        {**pair, "label": "1w 4s sync, count batches", "filter_base": True},
        {**pair, "eps": FILTER_EPS, "label": f"1w 4s sync, count batches, eps={FILTER_EPS}"},
        {**kkt, "kkt_base": True, "label": f"1w 4s sync, count batches, l1={KKT_L1}, no "
         "standardization"},
        {**kkt, "kkt": True, "label": f"1w 4s sync, count batches, l1={KKT_L1}, no "
         "standardization, KKT filter"},
        # the same job on a local standalone cluster: two TaskManagers, each with its own
        # Python worker process, so the job's Python code uses both cores (on the
        # mini-cluster all of it runs in the one driver process)
        {"workers": 2, "shards": 4, "consistency": "async", "events": prefix, "cluster": 2,
         "label": "2w 4s async cluster p=2"},
    ]  # fmt: skip


def run_end_to_end(events: int, prefix: int, data: Path, quick: bool) -> list[dict]:
    configs = end_to_end_configs(quick, events, prefix)
    lines = data.read_bytes().splitlines()[:events]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        home = {**os.environ, "STREAMSHARD_HOME": str(Path(tmp) / "cluster-home")}
        start = [SCRIPT, "cluster", "start", "--taskmanagers", "2", "--rest-port",
                 str(CLUSTER_REST_PORT)]  # fmt: skip
        head = [c for c in configs if c.get("headline")]
        batched = [c for c in configs if c.get("batched")]
        rest = [c for c in configs if not c.get("headline") and not c.get("batched")]
        records = batched_records(lines)
        # the headline on a broker of its own, the batched run too, the shorter runs on one
        # broker for all
        for group, stream in ((head, lines), (batched, records),
                              (rest, lines[: max(c["events"] for c in rest)])):  # fmt: skip
            topic = f"bench-{len(stream)}"
            with fresh_broker(stream, topic) as (kafka, broker_pid):
                for cfg in group:
                    if cfg.get("cluster"):
                        subprocess.run(start, env=home, check=True, capture_output=True,
                                       timeout=300)  # fmt: skip
                    n = cfg["events"]
                    cfg = {**cfg, "timeout": 120 + n / 40, "prefix": prefix}
                    print(f"  end to end: {cfg['label']} on {n:,} events ...", flush=True)
                    try:
                        results.append(end_to_end(kafka, topic, n, cfg, tmp, broker_pid))
                    finally:
                        if cfg.get("cluster"):
                            subprocess.run([SCRIPT, "cluster", "stop"], env=home,
                                           capture_output=True)  # fmt: skip
    return results
