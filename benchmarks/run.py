"""The benchmark harness (``make bench``; ``make bench ARGS=--quick`` for a smaller run).

On one seeded stream from the ``ctr`` generator it measures, in the same run on the same
machine:

- the **ceiling** (a minimal sparse FTRL on pre-hashed mini-batches, ``benchmarks/ceiling.py``),
  the same with orjson decoding and batch hashing, and streamshard's learner on the ceiling's
  batches (it must reach 0.8 of the ceiling);
- the single-process libraries as their users run them: River (``LogisticRegression`` with its
  default SGD and with FTRL), scikit-learn's ``partial_fit``, Vowpal Wabbit;
- the **consumer service** a user would write instead of streamshard (``benchmarks/service.py``:
  Kafka in, decode, validate, hash, learn, one prediction per event to Kafka), with
  confluent-kafka and with kafka-python, each against a fresh embedded broker;
- ``streamshard train`` end to end from a pre-filled topic (the headline: 2 workers, 4 shards,
  async, on the whole stream, on a fresh broker; the batched contract on the whole stream; 1
  worker, 1 shard, sync on 200,000 events; a grid, the filter pair and the standalone cluster
  on a prefix).

Every end-to-end row shows its **COST** (McSherry et al., HotOS 2015): its throughput as a
fraction of the consumer service's and of the ceiling's, and its CPU µs per event in the JVM,
the Python processes and the broker, read from ``/proc``. A contender whose AUC is more than
0.05 below the best on the same events is flagged (a mis-configured baseline is a harness
bug). JSON and Markdown go to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import md_table, write  # noqa: E402
from benchmarks.end_to_end import BITS, fresh_broker, run_end_to_end  # noqa: E402
from benchmarks.usage import TreeUsage, per_event_us  # noqa: E402

DATA = ROOT / "benchmarks" / ".data"
SEED = 2026


def data_file(events: int) -> Path:
    """The stream as raw JSON lines (what a consumer reads off Kafka), made once per size."""
    from operators.synthetic import CtrSettings, CtrStream, encode

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


SERVICE_CLIENTS = ("confluent-kafka", "kafka-python")


def service(client: str, lines: list[bytes]) -> dict:
    """The consumer service on a fresh broker: its events/s and CPU per event by process."""
    with fresh_broker(lines, "svc-in") as (kafka, broker_pid):
        cmd = [sys.executable, str(ROOT / "benchmarks" / "service.py"), "--client", client,
               "--bootstrap-servers", kafka.bootstrap_servers, "--topic", "svc-in",
               "--out-topic", "svc-pred", "--events", str(len(lines)), "--bits", str(BITS),
               "--timeout", str(120 + len(lines) / 500)]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        usage = TreeUsage(proc.pid, broker_pid=broker_pid)
        out, err = proc.communicate()
        used = usage.stop()
    if proc.returncode != 0:
        return {"name": f"service ({client})", "error": (err.strip().splitlines() or ["?"])[-1]}
    doc = json.loads(out.strip().splitlines()[-1])
    return {**doc, "peak_rss_mib": used["peak_rss_mib"],
            "cpu_us_per_event": per_event_us(used["cpu_s"], doc["events"])}  # fmt: skip


def _f(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _cpu(r: dict) -> str:
    cpu = r.get("cpu_us_per_event")
    if not cpu:
        return "–"
    return f"{cpu['jvm']:,.0f} / {cpu['python']:,.0f} / {cpu['broker']:,.0f}"


def auc_flags(rows: list[dict], margin: float = 0.05) -> set[str]:
    """Names of the rows whose AUC is more than ``margin`` below the best row on the same
    number of events."""
    flagged = set()
    ok = [r for r in rows if "error" not in r and r.get("auc") is not None]
    for n in {r["events"] for r in ok}:
        same = [r for r in ok if r["events"] == n]
        best = max(r["auc"] for r in same)
        flagged |= {_name(r) for r in same if r["auc"] < best - margin}
    return flagged


def _name(r: dict) -> str:
    return f"streamshard train {r['label']}" if "label" in r else r["name"]


def table(single: list[dict], services: list[dict], e2e: list[dict], ceiling: dict) -> str:
    """One row per contender, with its throughput over the ceiling's and over the consumer
    service's (the COST columns) and the CPU each process spent per event."""
    svc = next((r for r in services if "error" not in r), {})
    flags = auc_flags(single + services + e2e)
    rows = []
    for r in single + services + e2e:
        name = _name(r)
        if "error" in r:
            rows.append([name, "error: " + r["error"]] + [""] * 9)
            continue
        rate = _f(r["events_per_s"], ",.0f")
        if "steady_events_per_s" in r:
            rate = f"{r['steady_events_per_s']:,.0f} steady ({r['events_per_s']:,.0f} whole run)"
        steady = r.get("steady_events_per_s", r["events_per_s"])
        per_svc = _f(steady / svc["events_per_s"], ".3f") if svc and r in services + e2e else "–"
        auc = _f(r["auc"], ".4f") + (" **(AUC > 0.05 below the best)**" if name in flags else "")
        rows.append([
            name, f"{r['events']:,}", rate, _f(steady / ceiling["events_per_s"], ".4f"),
            per_svc, auc, _f(r.get("auc_last10"), ".4f"), _cpu(r),
            f"{r['peak_rss_mib']:,.0f}",
            f"{r['update_records_per_event']:.3f} / {r['update_bytes_per_event']:,.0f} B"
            if "update_bytes_per_event" in r else "–",
            f"{r['staleness']['p50']:.0f} / {r['staleness']['p90']:.0f} / {r['staleness']['max']}"
            if "staleness" in r else "–",
        ])  # fmt: skip
    return md_table(
        ["contender", "events", "events/s", "÷ ceiling", "÷ service (COST)", "AUC",
         "AUC last 10%", "CPU µs/event JVM / Python / broker", "peak MiB",
         "updates/event (records / bytes)", "staleness p50/p90/max"],
        rows,
    )  # fmt: skip


def _verdict(ok: bool, missed: str) -> str:
    return "met" if ok else f"MISSED {missed}".rstrip()


def learner_bench(events: int) -> dict:
    """``benchmarks/learner_bench.py``: the learner and the ceiling alternating in one
    process, so that both see the same load (their rows above ran minutes apart)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "learner_bench.py"), "--json",
           "--events", str(events)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def learner_table(bench: dict) -> str:
    if "error" in bench:
        return f"learner_bench: error: {bench['error']}\n"
    rows = [[f"{r['batch']:,}", f"{r['ours_us']:.2f}", f"{r['ceiling_us']:.2f}",
             f"{r['ratio']:.2f}", f"{r['auc_ours']:.4f}", f"{r['auc_ceiling']:.4f}"]
            for r in bench["rows"]]  # fmt: skip
    return (f"\nLearner against the ceiling, alternating in one process, {bench['events']:,} "
            "pre-hashed events (`benchmarks/learner_bench.py`):\n\n" + md_table(
                ["batch", "learner µs/event", "ceiling µs/event", "÷ ceiling", "AUC learner",
                 "AUC ceiling"], rows))  # fmt: skip


def learner_targets(single: list[dict], bench: dict) -> list[str]:
    """Issue 16: the ceiling is a ceiling, the project's learner reaches 0.8 of it."""
    by = {r["name"]: r for r in single if "error" not in r}
    out = []
    if "ceiling" in by:
        c = by["ceiling"]["events_per_s"]
        out.append(f"- Ceiling {c:,.0f} events/s (target >= 300,000): "
                   f"{_verdict(c >= 300_000, f'by {300_000 - c:,.0f}/s')}.")  # fmt: skip
    at = next((r for r in bench.get("rows", []) if r["batch"] == 100), None)
    if at:
        share = at["ratio"]
        out.append(f"- streamshard's learner at mini-batches of 100: {share:.2f} of the "
                   f"ceiling, alternating on the same batches (target >= 0.8): "
                   f"{_verdict(share >= 0.8, f'by {0.8 - share:.2f}')}.")  # fmt: skip
    return out


def _throughput(base: dict, svc: dict, target: float, where: str) -> str:
    steady = base["steady_events_per_s"]
    ratio = steady / svc["events_per_s"] if svc else None
    ok = steady >= target and (ratio is None or ratio >= 1)
    miss = []
    if steady < target:
        miss.append(f"{target:,.0f}/s by {target / steady:.1f}x")
    if ratio is not None and ratio < 1:
        miss.append(f"the service by {1 / ratio:.1f}x")
    cost = f"{ratio:.3f} of the consumer service ({svc['name']}, " \
           f"{svc['events_per_s']:,.0f}/s)" if svc else "no service row"  # fmt: skip
    return (
        f"- {where}, {base['events']:,} events: {steady:,.0f} events/s steady "
        f"({base['events_per_s']:,.0f}/s with the job's start-up), {cost}; target >= "
        f"{target:,.0f}/s and >= 1.0x the service: {_verdict(ok, ', '.join(miss))}."
    )


def _accuracy(base: dict, ref: dict) -> str:
    gap = ref["auc"] - base["auc"]
    verdict = _verdict(abs(gap) <= 0.002, f"by {abs(gap) - 0.002:.4f}")
    return (
        f"- Its AUC {base['auc']:.4f} vs the single-process learner's {ref['auc']:.4f} on the "
        f"same {base['events']:,} events: gap {gap:+.4f}, target within 0.002: {verdict} "
        f"(staleness p50 {base['staleness']['p50']:.0f}, max {base['staleness']['max']})."
    )


def targets(e2e: list[dict], services: list[dict], learner: dict, prefix: dict) -> list[str]:
    """Issue 17's verdicts, each saying by how much a missed target is missed."""
    out = []
    ok = [r for r in e2e if "error" not in r]
    svc = next((r for r in services if "error" not in r), None)
    head = next((r for r in ok if r.get("headline")), None)
    if head:
        out.append(_throughput(head, svc, 20_000, "2 workers, 4 shards, async, mini-cluster"))
        out.append(_accuracy(head, learner))
    batched = next((r for r in ok if r.get("batched")), None)
    if batched:
        out.append(_throughput(batched, None, 50_000, "batched records in, prediction batches "
                               "out, 2 workers, 4 shards, async, mini-cluster"))  # fmt: skip
    one = next((r for r in ok if r.get("one_sync")), None)
    if one:
        out.append(_throughput(one, None, 15_000, "1 worker, 1 shard, sync, mini-cluster"))
    cluster = next((r for r in ok if r.get("cluster")), None)
    if cluster:
        out.append(_throughput(cluster, svc, 20_000, "2w 4s async, standalone cluster p=2"))
        out.append(_accuracy(cluster, prefix))
    peak = max((r["peak_rss_mib"] for r in ok), default=None)
    if peak is not None:
        out.append(f"- Peak memory of any job {peak:,.0f} MiB (target <= 3,072): "
                   f"{_verdict(peak <= 3072, f'by {peak - 3072:,.0f} MiB')}.")  # fmt: skip
    out.append(_filter_pair(ok, "filter_base", "eps", "update_bytes_per_event", "update bytes",
                            ",.0f", "Significantly-modified filter (EPS {eps}"))  # fmt: skip
    out.append(_filter_pair(ok, "kkt_base", "kkt", "pushed_per_event", "pushed coordinates",
                            ".3f", "KKT filter (L1 {l1}, unstandardized"))  # fmt: skip
    return [line for line in out if line]


def _filter_pair(rows, base: str, flag: str, field: str, what: str, fmt: str, title: str):
    """The target line of a filter's pair of runs (``base`` without it, ``flag`` with it):
    ``field`` per event at most half, at an AUC cost under 0.002; None without the pair."""
    plain = next((r for r in rows if r.get(base)), None)
    filt = next((r for r in rows if r.get(flag)), None)
    if not (plain and filt):
        return None
    share = filt[field] / plain[field]
    cost = plain["auc"] - filt["auc"]
    return (
        f"- {title.format(**filt)}, 1 worker, 4 shards, sync, {filt['events']:,} events): "
        f"{what} per event {filt[field]:{fmt}} vs {plain[field]:{fmt}} ({share:.2f} of it, "
        f"target <= 0.5), AUC {filt['auc']:.4f} vs {plain['auc']:.4f}, cost {cost:+.4f} "
        f"(target < 0.002): {_verdict(share <= 0.5 and cost < 0.002, '')}."
    )


SINGLE = ("ceiling", "ceiling-orjson", "learner", "numpy-loop", "sklearn", "vw")
RIVER = ("river", "river-ftrl")  # per event and slow: on a prefix of the stream


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 events, 5 end-to-end runs")
    parser.add_argument("--events", type=int, help="stream length (default 1,000,000)")
    parser.add_argument("--e2e-events", type=int, help="end-to-end prefix (default 20,000)")
    parser.add_argument("--skip-e2e", action="store_true", help="no streamshard runs")
    args = parser.parse_args(argv)
    events = args.events or (100_000 if args.quick else 1_000_000)
    e2e_events = args.e2e_events or (10_000 if args.quick else 20_000)
    river_events = min(events, 20_000 if args.quick else 50_000)
    data = data_file(events)
    print(f"stream: {data} ({events:,} events, 2^{BITS} hashed dimensions, seed {SEED})")
    single = []
    for name in SINGLE + RIVER:
        print(f"  {name} ...", flush=True)
        single.append(contender(name, data, river_events if name in RIVER else None))
    by = {r["name"]: r for r in single}
    ceiling, learner = by["ceiling"], by["numpy-loop"]
    prefix = contender("learner", data, limit=e2e_events)
    prefix["name"] = f"learner (first {e2e_events:,})"
    single.append(prefix)
    print("  learner against the ceiling ...", flush=True)
    bench = learner_bench(min(events, 100_000))
    lines = data.read_bytes().splitlines()
    services = []
    for client in SERVICE_CLIENTS:
        print(f"  service ({client}) ...", flush=True)
        services.append(service(client, lines))
    e2e = [] if args.skip_e2e else run_end_to_end(events, e2e_events, data, args.quick)
    text = table(single, services, e2e, ceiling) + learner_table(bench)
    verdicts = learner_targets(single, bench) + targets(e2e, services, learner, prefix)
    settings = "\n".join(f"- {r['name']}: {r.get('settings') or r.get('client', '')}"
                         for r in single + services if "error" not in r)  # fmt: skip
    notes = (
        "\nSettings (mini-batches of 100 unless said; every contender test-then-train):\n"
        f"{settings}\n- streamshard train: its defaults (FTRL alpha 0.2, mini-batches of "
        "1,000 after a warm-up, Python in thread mode, checkpoints every 2 s, exactly-once "
        "predictions and metrics); events/s steady = the evaluator's rate "
        "from first to last prediction. The service writes at-least-once.\n\n"
        f"River runs on the first {river_events:,} events only: its `learn_one` walks the "
        "whole weight dictionary on every event (docs/benchmarks.md), so its rate falls as the "
        "model grows and a prefix flatters it.\n\n"
        "Targets:\n" + "\n".join(verdicts) + "\n"
    )
    print(text + notes)
    doc = {"events": events, "e2e_events": e2e_events, "seed": SEED, "hash_bits": BITS,
           "single_process": single, "learner_bench": bench, "services": services,
           "end_to_end": e2e,
           "targets": verdicts}  # fmt: skip
    js, md = write("train" if not args.quick else "train-quick", doc, text + notes)
    print(f"results: {js} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
