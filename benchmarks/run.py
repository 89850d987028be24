"""The benchmark harness (``make bench``; ``make bench ARGS=--quick`` for a smaller run).

On one seeded stream from the ``ctr`` generator it measures, in the same run on the same
machine, streamshard's numpy learner (the ceiling), a hand-rolled decode+hash loop around it,
River, scikit-learn's ``partial_fit`` and Vowpal Wabbit (each in its own process, so peak
memory is its own), and ``streamshard train`` end to end on the mini-cluster from a
pre-filled topic. It prints one table with ratios to the numpy ceiling and to River, checks
the targets of issue 6 and says by how much a missed one is missed, and writes JSON and
Markdown under ``benchmarks/results/``.

The headline run (2 workers, 4 shards, async, on the mini-cluster) trains on the whole stream,
like every single-process contender, so its events/s and AUC are compared with theirs on the
same events. The other end-to-end runs (the grid of workers, shards and consistency modes,
the standalone cluster) use the first ``--e2e-events`` events, and their AUC is compared with
the numpy learner on the same prefix; the filter pair (with and without the
significantly-modified filter) runs on the first 20,000 and is compared with itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import md_table, write  # noqa: E402
from flink_jobs.procs import descendants  # noqa: E402

DATA = ROOT / "benchmarks" / ".data"
SCRIPT = str(Path(sys.executable).with_name("streamshard"))
SEED = 2026
BITS = 20
# The numpy learner with the filter on this stream, at 10k / 20k / 100k events: coordinates
# sent per event (4.38 without it) and AUC cost. EPS 0.003: 2.88 / 2.56 / 1.69, cost 0.0009 /
# 0.0002 / 0.0001; EPS 0.005: 2.04 / 1.79 / 1.13, cost 0.0014 / 0.0007 / 0.0002; EPS 0.01:
# 1.08 / 0.94 / 0.55, cost 0.0056 / 0.0027 / 0.0011 (README)
FILTER_EPS = 0.005
FILTER_EVENTS = 20_000  # the filter pair's stream (at most the whole stream)


def data_file(events: int) -> Path:
    """The stream as raw JSON lines (what a consumer reads off Kafka), made once per size."""
    from connectors.synthetic import CtrSettings, CtrStream, encode

    path = DATA / f"ctr-{events}-s{SEED}.jsonl"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            for doc, _ in CtrStream(CtrSettings(events=events, seed=SEED)).events():
                out.write(encode(doc) + b"\n")
        tmp.rename(path)
    return path


def contender(name: str, data: Path, limit: int | None = None) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "learners.py"), name, "--data", str(data)]
    cmd += ["--bits", str(BITS)] + (["--limit", str(limit)] if limit else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    if out.returncode != 0:
        return {"name": name, "error": out.stderr.strip().splitlines()[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


class TreeMemory:
    """Peak resident memory of a process and all its descendants, sampled every 0.5 s."""

    def __init__(self, pid: int, more=lambda: []):
        # ``more()``: further tree roots, e.g. a standalone cluster's daemons
        self.pid, self.more, self.peak_mib, self._stop = pid, more, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree_rss(self) -> float:
        roots = [self.pid, *self.more()]
        total = 0
        for pid in {*roots, *(p for root in roots for p in descendants(root))}:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                total += int(stat[stat.rindex(")") + 2 :].split()[21]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError, IndexError):
                continue
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self._tree_rss())
            self._stop.wait(0.5)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mib


CLUSTER_REST_PORT = 18181


def cluster_pids(home: Path) -> list[int]:
    """The standalone cluster's JobManager and TaskManager processes (Flink's pid files)."""
    pids = []
    for pid_file in (home / "cluster" / "pid").glob("*.pid"):
        pids += [int(p) for p in pid_file.read_text().split() if Path(f"/proc/{p}").exists()]
    return pids


def end_to_end(kafka, topic: str, events: int, cfg: dict, tmp: str) -> dict:
    """One ``streamshard train`` run on the pre-filled ``topic`` (on the mini-cluster, or with
    ``cfg["cluster"]`` submitted to the local standalone cluster); summary plus update volume
    and staleness read back from its topics."""
    from connectors.admin import read_records

    tag = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{topic}-{cfg['label']}")
    summary_path = Path(tmp) / f"{tag}.json"
    home = Path(tmp) / "cluster-home"
    where = ["train"]
    if cfg.get("cluster"):
        where = ["submit", "train", "--jobmanager", f"127.0.0.1:{CLUSTER_REST_PORT}", "--",
                 "--parallelism", str(cfg["cluster"])]  # fmt: skip
    cmd = [
        SCRIPT, *where, "--bootstrap-servers", kafka.bootstrap_servers,
        "--input-topic", topic, "--updates-topic", f"{tag}-upd",
        "--predictions-topic", f"{tag}-pred", "--metrics-topic", f"{tag}-met",
        "--dead-letter-topic", f"{tag}-dlq", "--hash-bits", str(BITS),
        "--workers", str(cfg["workers"]), "--shards", str(cfg["shards"]),
        "--consistency", cfg["consistency"], "--update-threshold", str(cfg.get("eps", 0.0)),
        "--max-events", str(events), "--summary-json", str(summary_path),
        "--batch-timeout", str(cfg.get("batch_timeout", 200)),
        "--checkpoint-dir", f"file://{tmp}/ckpt-{tag}", "--timeout", str(cfg["timeout"]),
    ]  # fmt: skip
    env = {**os.environ, "STREAMSHARD_HOME": str(home)}
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    memory = TreeMemory(job.pid, (lambda: cluster_pids(home)) if cfg.get("cluster") else list)
    _, err = job.communicate()
    peak = memory.stop()
    if job.returncode != 0:
        return {**cfg, "error": (err.strip().splitlines() or ["?"])[-1][:300]}
    if not summary_path.exists():  # under `flink run` a failure may still exit 0
        return {**cfg, "error": (err.strip().splitlines() or ["no summary"])[-1][:300]}
    summary = json.loads(summary_path.read_text())
    task = summary["tasks"]["ctr"]
    updates = [r.value for r in read_records(kafka, f"{tag}-upd", timeout=600, idle=5)]
    coords = sum(len(json.loads(v)["indices"]) for v in updates)
    preds = [
        json.loads(r.value)
        for r in read_records(kafka, f"{tag}-pred", summary["events"], timeout=900, idle=10)
    ]
    preds.sort(key=lambda p: p["event_id"])  # stream order: e-000000001, e-000000002, ...
    stale = np.array([p["staleness"] for p in preds]) if preds else np.zeros(1)
    labels = np.array([p["label"] for p in preds])
    scores = np.array([p["score"] for p in preds])
    from operators.metrics import summary as metric_summary

    tail = max(1, len(preds) // 10)
    last = metric_summary(labels[-tail:], scores[-tail:]) if preds else {}
    head = cfg.get("prefix", 0)
    first = metric_summary(labels[:head], scores[:head]) if 0 < head < len(preds) else {}
    return {
        **cfg,
        "events": summary["events"],
        "seconds": summary["seconds"],
        "events_per_s": summary["events_per_s"],
        "steady_events_per_s": task["events_per_s"],
        "auc": task["auc"],
        "log_loss": task["log_loss"],
        "auc_last10": last.get("auc"),
        "auc_prefix": first.get("auc"),
        "log_loss_last10": last.get("log_loss"),
        "peak_rss_mib": peak,
        "update_records_per_event": len(updates) / summary["events"],
        "update_bytes_per_event": sum(len(v) for v in updates) / summary["events"],
        "update_coords_per_event": coords / summary["events"],
        "staleness": {
            "p50": float(np.percentile(stale, 50)),
            "p90": float(np.percentile(stale, 90)),
            "max": int(stale.max()),
        },
    }


E2E_CONFIGS = [
    {"workers": w, "shards": s, "consistency": c}
    for w in (1, 2)
    for s in (1, 4)
    for c in ("async", "bounded:2", "sync")
]


def end_to_end_configs(quick: bool, events: int, prefix: int) -> list[dict]:
    """The runs, each with its event count: the headline on the whole stream, the rest on
    the prefix."""
    grid = [] if quick else [{**c, "events": prefix} for c in E2E_CONFIGS]
    headline = {"workers": 2, "shards": 4, "consistency": "async", "events": events}
    # the filter pair: 1 worker, sync, mini-batches cut by count only (no batch timeout), so
    # both runs are deterministic and the AUC difference is the filter's alone (the numpy
    # learner gives the same AUCs); async runs move AUC by more than 0.002 between repeats
    pair = {"workers": 1, "shards": 4, "consistency": "sync", "batch_timeout": 0,
            "events": min(events, max(prefix, FILTER_EVENTS))}  # fmt: skip
    return [
        {**headline, "label": f"2w 4s async, all {events:,}", "headline": True},
        *grid,
        {**pair, "label": "1w 4s sync, count batches", "filter_base": True},
        {**pair, "eps": FILTER_EPS, "label": f"1w 4s sync, count batches, eps={FILTER_EPS}"},
        # the same job on a local standalone cluster: two TaskManagers, each with its own
        # Python worker process, so the job's Python code uses both cores (on the
        # mini-cluster all of it runs in the one driver process)
        {"workers": 2, "shards": 4, "consistency": "async", "events": prefix, "cluster": 2,
         "label": "2w 4s async cluster p=2"},
    ]  # fmt: skip


def run_end_to_end(events: int, prefix: int, data: Path, quick: bool) -> list[dict]:
    from connectors.admin import create_topics, produce
    from connectors.broker import EmbeddedBroker
    from connectors.config import KafkaConfig

    configs = end_to_end_configs(quick, events, prefix)
    lines = data.read_bytes().splitlines()[:events]
    results = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        kafka = KafkaConfig(broker.bootstrap_servers)
        home = {**os.environ, "STREAMSHARD_HOME": str(Path(tmp) / "cluster-home")}
        start = [SCRIPT, "cluster", "start", "--taskmanagers", "2", "--rest-port",
                 str(CLUSTER_REST_PORT)]  # fmt: skip
        topic = f"bench-{events}"
        create_topics(kafka, [topic], partitions=1)  # one partition: the stream's order
        produce(kafka, topic, [(None, v) for v in lines])  # before any clock starts
        for cfg in configs:
            label = cfg.get("label") or f"{cfg['workers']}w {cfg['shards']}s {cfg['consistency']}"
            if cfg.get("cluster"):
                subprocess.run(start, env=home, check=True, capture_output=True, timeout=300)
            # sync with several workers can stall at the end of a bounded stream (README)
            n = cfg["events"]
            cfg = {**cfg, "label": label, "timeout": 120 + n / 40, "prefix": prefix}
            print(f"  end to end: {label} on {n:,} events ...", flush=True)
            try:
                results.append(end_to_end(kafka, topic, n, cfg, tmp))
            finally:
                if cfg.get("cluster"):
                    subprocess.run([SCRIPT, "cluster", "stop"], env=home, capture_output=True)
    return results


def _f(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _per_river(r: dict, river: dict, fmt: str) -> str:
    """``r``'s events/s as a multiple of River's ("–" when River did not run)."""
    if "events_per_s" not in river:
        return "–"
    return _f(r["events_per_s"] / river["events_per_s"], fmt)


def table(single: list[dict], e2e: list[dict], ceiling: dict, river: dict) -> str:
    rows = []
    for r in single:
        if "error" in r:
            rows.append([r["name"], "error: " + r["error"]] + [""] * 10)
            continue
        rows.append([
            r["name"], f"{r['events']:,}", _f(r["events_per_s"], ",.0f"),
            _f(r["events_per_s"] / ceiling["events_per_s"], ".3f"),
            _per_river(r, river, ".2f"),
            _f(r["auc"], ".4f"), _f(r["log_loss"], ".4f"), _f(r["auc_last10"], ".4f"),
            _f(r["log_loss_last10"], ".4f"),
            f"{r['peak_rss_mib']:,.0f} ({r.get('learner_mib', 0):,.0f})", "–", "–",
        ])  # fmt: skip
    for r in e2e:
        name = f"streamshard train {r['label']}"
        if "error" in r:
            rows.append([name, "error: " + r["error"]] + [""] * 10)
            continue
        rows.append([
            name, f"{r['events']:,}",
            f"{r['events_per_s']:,.0f} ({r['steady_events_per_s']:,.0f} steady)",
            _f(r["events_per_s"] / ceiling["events_per_s"], ".4f"),
            _per_river(r, river, ".3f"),
            _f(r["auc"], ".4f"), _f(r["log_loss"], ".4f"), _f(r["auc_last10"], ".4f"),
            _f(r["log_loss_last10"], ".4f"), _f(r["peak_rss_mib"], ",.0f"),
            f"{r['update_records_per_event']:.3f} / {r['update_bytes_per_event']:,.0f} B",
            f"{r['staleness']['p50']:.0f} / {r['staleness']['p90']:.0f} / {r['staleness']['max']}",
        ])  # fmt: skip
    return md_table(
        ["contender", "events", "events/s", "÷ numpy ceiling", "÷ River", "AUC", "log loss",
         "AUC last 10%", "log loss last 10%", "peak MiB (learner)",
         "updates/event (records / bytes)",
         "staleness p50/p90/max"],
        rows,
    )  # fmt: skip


def _throughput(base: dict, river: dict, where: str) -> str:
    steady = base["steady_events_per_s"] / river["events_per_s"]
    whole = base["events_per_s"] / river["events_per_s"]
    verdict = "met" if steady >= 1 else f"MISSED by {(1 / steady - 1) * 100:.0f}%"
    return (
        f"- 2 workers, 4 shards, async, {where}, {base['events']:,} events: "
        f"{base['steady_events_per_s']:,.0f} events/s steady ({base['events_per_s']:,.0f}/s "
        f"over the whole run with the job's start-up) vs River's decode+hash+learn_one loop "
        f"{river['events_per_s']:,.0f} events/s on {river['events']:,}: ratio {steady:.2f} "
        f"steady ({whole:.2f} whole run); target >= 1: {verdict}."
    )


def _accuracy(base: dict, ceiling: dict) -> str:
    gap = ceiling["auc"] - base["auc"]
    verdict = "met" if abs(gap) <= 0.002 else f"MISSED by {abs(gap) - 0.002:.4f}"
    return (
        f"- Its AUC {base['auc']:.4f} vs the numpy learner's {ceiling['auc']:.4f} on the same "
        f"{base['events']:,} events: gap {gap:+.4f}, target within 0.002: {verdict} "
        f"(staleness p50 {base['staleness']['p50']:.0f}, max {base['staleness']['max']} "
        "mini-batches; see benchmarks/staleness.py)."
    )


def targets(e2e: list[dict], river: dict, ceiling: dict, prefix_ceiling: dict) -> list[str]:
    out = []
    ok = [r for r in e2e if "error" not in r]
    head = next((r for r in ok if r.get("headline")), None)
    if head:
        if "events_per_s" in river:
            out.append(_throughput(head, river, "on the mini-cluster"))
        out.append(_accuracy(head, ceiling))
        if head.get("auc_prefix") is not None:
            out.append(
                f"- Early phase, for information: its AUC over the first "
                f"{prefix_ceiling['events']:,} events alone {head['auc_prefix']:.4f} vs the "
                f"numpy learner's {prefix_ceiling['auc']:.4f} (gap "
                f"{prefix_ceiling['auc'] - head['auc_prefix']:+.4f}): asynchronous workers "
                "lose most while the weights move fast."
            )
    cluster = next((r for r in ok if r.get("cluster")), None)
    if cluster:
        if "events_per_s" in river:
            out.append(_throughput(cluster, river, "on the standalone cluster, p=2"))
        out.append(_accuracy(cluster, prefix_ceiling))
    plain = next((r for r in ok if r.get("filter_base")), None)
    filt = next((r for r in ok if r.get("eps")), None)
    if plain and filt:
        share = filt["update_bytes_per_event"] / plain["update_bytes_per_event"]
        cost = plain["auc"] - filt["auc"]
        verdict = "met" if share <= 0.5 and cost < 0.002 else "MISSED"
        out.append(
            f"- Significantly-modified filter (EPS {filt['eps']}, 1 worker, 4 shards, sync, "
            f"{filt['events']:,} events): update bytes per event "
            f"{filt['update_bytes_per_event']:,.0f} vs {plain['update_bytes_per_event']:,.0f} "
            f"({share:.2f} of it, target <= 0.5), AUC {filt['auc']:.4f} vs {plain['auc']:.4f}, "
            f"cost {cost:+.4f} (target < 0.002): {verdict}."
        )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 events, 4 end-to-end runs")
    parser.add_argument("--events", type=int, help="stream length (default 1,000,000)")
    parser.add_argument("--e2e-events", type=int, help="end-to-end prefix (default 20,000)")
    parser.add_argument("--skip-e2e", action="store_true", help="single-process contenders only")
    args = parser.parse_args(argv)
    events = args.events or (100_000 if args.quick else 1_000_000)
    e2e_events = args.e2e_events or (10_000 if args.quick else 20_000)
    data = data_file(events)
    print(f"stream: {data} ({events:,} events, 2^{BITS} hashed dimensions, seed {SEED})")
    single = []
    for name in ("numpy-ceiling", "numpy-loop", "river", "sklearn", "vw"):
        print(f"  {name} ...", flush=True)
        single.append(contender(name, data))
    ceiling, river = single[0], single[2]
    prefix = contender("numpy-ceiling", data, limit=e2e_events)
    prefix["name"] = f"numpy-ceiling (first {e2e_events:,})"
    single.append(prefix)
    e2e = [] if args.skip_e2e else run_end_to_end(events, e2e_events, data, args.quick)
    text = table(single, e2e, ceiling, river)
    verdicts = targets(e2e, river, ceiling, prefix)
    notes = (
        "\nSettings: numpy learner = `OnlineLogistic` (FTRL alpha 0.05, beta 1, mini-batches of "
        "100); River `LogisticRegression()` defaults (SGD lr 0.01); scikit-learn "
        "`SGDClassifier(loss='log_loss')` defaults, `partial_fit` on batches of 100; Vowpal "
        f"Wabbit `--loss_function logistic --link logistic -b {BITS}` (its own hashing). "
        "End-to-end: `streamshard train` defaults (FTRL, batch 100, checkpoints every 2 s, "
        "exactly-once predictions and metrics), events/s over the whole run including the "
        "job's start-up, and in brackets the evaluator's steady rate (first to last "
        f"prediction). The headline end-to-end run trains on all {events:,} events, the "
        f"others on the first {e2e_events:,}.\n\n"
        "Targets:\n" + "\n".join(verdicts) + "\n"
    )
    print(text + notes)
    doc = {"events": events, "e2e_events": e2e_events, "seed": SEED, "hash_bits": BITS,
           "single_process": single, "end_to_end": e2e, "targets": verdicts}  # fmt: skip
    js, md = write("train" if not args.quick else "train-quick", doc, text + notes)
    print(f"results: {js} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
