"""The ``streamshard`` commands around the jobs: the embedded broker, topics, snapshots,
export, the report, the local cluster, submitting and managing jobs on it, and tailing a
topic. Each is a handler ``name(args) -> exit status`` and a flag adder ``name_args(p)``,
wired up by ``flink_jobs/cli.py``."""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from pathlib import Path

from connectors.errors import ConfigError, DecodeError, StreamshardError
from flink_jobs.options import (
    Parser,
    add_kafka_args,
    check_init_model,
    checked_bits,
    kafka_config,
)


def broker(args: argparse.Namespace) -> int:
    from connectors.broker import pid_alive, port_open, read_record, start_detached, stop_detached

    if args.action == "start":
        record = start_detached(args.port)
        print(f"broker running at {record.bootstrap_servers} (pid {record.pid}, log {record.log})")
    elif args.action == "stop":
        record = stop_detached()
        print(f"broker stopped (pid {record.pid})" if record else "no broker was running")
    else:
        record = read_record()
        if record is None or not pid_alive(record.pid):
            print("broker: not running")
            return 1
        port = int(record.bootstrap_servers.rsplit(":", 1)[1])
        state = "running" if port_open(port) else "not answering"
        print(f"broker: {state} at {record.bootstrap_servers} (pid {record.pid}, log {record.log})")
        return 0 if state == "running" else 1
    return 0


def topics(args: argparse.Namespace) -> int:
    from connectors.admin import create_topics, delete_topics, list_topics

    cfg = kafka_config(args)
    if args.action == "list":
        print("\n".join(list_topics(cfg)))
        return 0
    if not args.names:
        raise StreamshardError(f"topics {args.action} needs at least one topic name")
    if args.action == "create":
        created = create_topics(cfg, args.names, args.partitions)
        print(f"created: {', '.join(created) or '(none; all existed)'}")
    else:
        print(f"deleted: {', '.join(delete_topics(cfg, args.names)) or '(none existed)'}")
    return 0


def snapshot(args: argparse.Namespace) -> int:
    from operators.snapshot import from_topic, gap_warning, save

    base = None
    if args.init_model:  # loaded and verified once
        models = check_init_model(args.init_model, checked_bits(args.hash_bits))
        if len(models) > 1:
            tasks = ", ".join(sorted(models))
            raise ConfigError(f"--init-model {args.init_model}: holds the snapshots of "
                              f"{len(models)} tasks ({tasks}); name one of them")  # fmt: skip
        (base,) = models.values()
    else:
        checked_bits(args.hash_bits)
    kafka = kafka_config(args)
    for snap in from_topic(kafka, args.updates_topic, args.hash_bits, args.idle, base):
        print(f"{save(snap, args.out)}  task {snap.task} version {snap.version} run {snap.run}")
        warning = gap_warning(snap, args.updates_topic)
        if warning:
            print(warning, file=sys.stderr)
    return 0


def export(args: argparse.Namespace) -> int:
    import joblib

    from operators.export import to_sklearn
    from operators.snapshot import load

    if not Path(args.model).is_dir():
        raise StreamshardError(f"--model {args.model}: no such directory")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise StreamshardError(f"--out {out}: no such directory {out.parent}")
    snap = load(args.model)
    try:
        joblib.dump(to_sklearn(snap.weights, snap.bits), out)
    except OSError as exc:
        raise StreamshardError(f"--out {out}: cannot write: {exc.strerror}") from exc
    print(
        f"wrote {args.out}: Pipeline(FeatureHasher(2**{snap.bits}), LogisticRegression) of "
        f"task {snap.task} version {snap.version}; load it with joblib.load"
    )
    return 0


def _json_file(path: str, flag: str) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise StreamshardError(f"{flag} {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise StreamshardError(f"{flag} {path}: not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise StreamshardError(f"{flag} {path}: expected a JSON object")
    return doc


def report(args: argparse.Namespace) -> int:
    from flink_jobs.report import read_metrics, write_report

    docs = read_metrics(kafka_config(args), args.metrics_topic, idle=args.idle)
    truth = _json_file(args.truth, "--truth") if args.truth else None
    serving = (
        _json_file(args.serving_summary, "--serving-summary") if args.serving_summary else None
    )
    print(f"wrote {write_report(docs, args.out, args.run, truth, serving)}")
    return 0


def cluster(args: argparse.Namespace) -> int:
    from flink_jobs import cluster

    if args.action == "start":
        s = cluster.ClusterSettings(
            taskmanagers=args.taskmanagers,
            slots=args.slots,
            bind_host=args.bind_host,
            rest_port=args.rest_port,
        )
        if not s.loopback:
            print(
                f"streamshard cluster: warning: --bind-host {s.bind_host} exposes the REST "
                "API, which accepts jobs (that is, code), beyond this machine",
                file=sys.stderr,
            )
        info = cluster.start(s)
        print(
            f"cluster running: REST {s.rest}, {info['taskmanagers']} TaskManagers, "
            f"{info['slots-total']} slots; config and logs under {cluster.cluster_dir()}"
        )
    elif args.action == "stop":
        print("cluster stopped" if cluster.stop() else "no cluster was running")
    elif args.action == "add-taskmanager":
        s = cluster.load_settings()
        before = cluster.overview(s)["taskmanagers"]
        cluster.add_taskmanager()
        info = cluster.wait_for_taskmanagers(s, before + 1)
        print(f"cluster: {info['taskmanagers']} TaskManagers, {info['slots-total']} slots")
    else:
        s = cluster.load_settings()
        info = cluster.overview(s)
        print(
            f"cluster: REST {s.rest}, Flink {info.get('flink-version')}, "
            f"{info['taskmanagers']} TaskManagers, "
            f"{info['slots-available']}/{info['slots-total']} slots free, "
            f"{info['jobs-running']} jobs running; logs in {cluster.cluster_dir() / 'log'}"
        )
    return 0


def submit(args: argparse.Namespace) -> int:
    from flink_jobs import cluster

    if args.from_savepoint and not Path(args.from_savepoint.removeprefix("file:")).exists():
        raise StreamshardError(f"--from-savepoint {args.from_savepoint}: no such savepoint")
    return cluster.submit(
        args.job, args.job_args, args.jobmanager, args.detached, args.from_savepoint
    )


def jobs(args: argparse.Namespace) -> int:
    from flink_jobs import cluster

    host, _, port = args.jobmanager.rpartition(":")
    s = cluster.ClusterSettings(bind_host=host, rest_port=int(port))
    if args.action == "list":
        for job in cluster.jobs(s):
            print(f"{job['jid']}  {job['state']:<10} {job['name']}")
        return 0
    if not args.job_id:
        raise StreamshardError(f"jobs {args.action} needs a JOB_ID (see `streamshard jobs list`)")
    if args.action == "cancel":
        cluster.cancel(s, args.job_id)
        print(f"cancelled {args.job_id}")
    else:
        print(f"stopped {args.job_id}; savepoint {cluster.stop_with_savepoint(s, args.job_id)}")
    return 0


def _record_line(record, with_meta: bool) -> str:
    from connectors.messages import MAGIC, decode_update

    text = record.value.decode("utf-8", "backslashreplace") if record.value is not None else None
    if record.value is not None and record.value.startswith(MAGIC):
        try:  # a binary model update, shown as its JSON form
            text = decode_update(record.value).to_json()
        except DecodeError as exc:
            text = f"<{exc.reason}>"
    try:
        value = json.loads(text) if text is not None else None
    except ValueError:
        value = text
    if not with_meta:
        return json.dumps(value)
    key = record.key.decode("utf-8", "backslashreplace") if record.key is not None else None
    doc = {"partition": record.partition, "offset": record.offset, "key": key, "value": value}
    return json.dumps(doc)


def tail(args: argparse.Namespace) -> int:
    from connectors.admin import consumer

    if args.n < 1:
        raise StreamshardError(f"-n must be >= 1, got {args.n}")
    cons = consumer(kafka_config(args), args.topic, committed_only=not args.uncommitted)
    kept: deque = deque(maxlen=None if args.follow else args.n)
    try:
        idle_polls = 0
        while args.follow or idle_polls < args.idle * 5:
            batches = cons.poll(timeout_ms=200)
            idle_polls = 0 if batches else idle_polls + 1
            for batch in batches.values():
                for record in batch:
                    if args.follow:
                        print(_record_line(record, args.with_meta), flush=True)
                    elif args.head and len(kept) >= args.n:
                        continue
                    else:
                        kept.append(record)
            if args.head and len(kept) >= args.n:
                break
    finally:
        cons.close()
    for record in kept:
        print(_record_line(record, args.with_meta))
    return 0


def broker_args(p: Parser) -> None:
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")


def topics_args(p: Parser) -> None:
    p.add_argument("action", choices=["create", "list", "delete"])
    p.add_argument("names", nargs="*", metavar="TOPIC")
    p.add_argument("--partitions", type=int, default=1)
    add_kafka_args(p)


def snapshot_args(p: Parser) -> None:
    p.add_argument("--updates-topic", default="model-updates")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--hash-bits", type=int, default=20, help="the run's --hash-bits")
    p.add_argument(
        "--idle", type=float, default=3.0, help="seconds without records that end the read"
    )
    p.add_argument(
        "--init-model",
        metavar="DIR",
        help="a snapshot of the run to bring up to date: only the topic's newer updates "
        "are read (the topic may have lost the run's start)",
    )
    add_kafka_args(p)


def export_args(p: Parser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="a snapshot directory")
    p.add_argument("--to", default="sklearn", choices=["sklearn"])
    p.add_argument("--out", required=True, metavar="FILE")


def report_args(p: Parser) -> None:
    p.add_argument("--metrics-topic", default="metrics")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--run", help="the training run to report (default: the newest)")
    p.add_argument("--truth", metavar="PATH", help="the true model's figures, from "
                   "`generate --truth PATH`: drawn as reference lines")  # fmt: skip
    p.add_argument(
        "--serving-summary",
        metavar="PATH",
        help="a serving run's `serve --summary-json PATH`: shown in the report",
    )
    p.add_argument(
        "--idle", type=float, default=3.0, help="seconds without records that end the read"
    )
    add_kafka_args(p)


def cluster_args(p: Parser) -> None:
    p.add_argument("action", choices=["start", "stop", "status", "add-taskmanager"])
    p.add_argument("--taskmanagers", type=int, default=1)
    p.add_argument("--slots", type=int, default=2, help="task slots per TaskManager")
    p.add_argument(
        "--bind-host", default="127.0.0.1", help="REST and RPC address (default loopback only)"
    )
    p.add_argument("--rest-port", type=int, default=8081)


def submit_args(p: Parser) -> None:
    p.add_argument("job", choices=["train", "validate", "serve"])
    p.add_argument("--jobmanager", default="127.0.0.1:8081", metavar="HOST:PORT")
    p.add_argument("--detached", action="store_true")
    p.add_argument(
        "--from-savepoint",
        metavar="PATH",
        help="resume from this savepoint (as printed by `jobs stop-with-savepoint`); the job "
        "may run at another --parallelism",
    )
    p.epilog = "The job's own flags follow --, e.g. submit train -- --max-events 10000"


def jobs_args(p: Parser) -> None:
    p.add_argument("action", choices=["list", "cancel", "stop-with-savepoint"])
    p.add_argument("job_id", nargs="?", metavar="JOB_ID")
    p.add_argument("--jobmanager", default="127.0.0.1:8081", metavar="HOST:PORT")


def tail_args(p: Parser) -> None:
    p.add_argument("--topic", required=True)
    p.add_argument("-n", type=int, default=10, help="how many records (default 10)")
    p.add_argument("--head", action="store_true", help="the first N records instead of the last")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    p.add_argument("--with-meta", action="store_true", help="wrap with partition/offset/key")
    p.add_argument("--uncommitted", action="store_true", help="also read uncommitted records")
    p.add_argument(
        "--idle", type=float, default=2.0, help="seconds without records that end the read"
    )
    add_kafka_args(p)
