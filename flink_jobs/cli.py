"""The ``streamshard`` command line: one subcommand per job or tool.

Errors a user can cause print one line and exit 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections import deque
from pathlib import Path

from connectors.errors import ConfigError, DecodeError, StreamshardError
from flink_jobs import generate, serve, train, validate
from flink_jobs.options import (
    Parser,
    add_kafka_args,
    check_init_model,
    checked_bits,
    kafka_config,
)

EXIT_USAGE = 2


def _broker(args: argparse.Namespace) -> int:
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


def _topics(args: argparse.Namespace) -> int:
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


def _generate(args: argparse.Namespace) -> int:
    cfg = generate.config_from_args(args)
    result = generate.generate(cfg)
    if cfg.requests:
        print(f"sent {result.events:,} requests to {cfg.topic} in {result.seconds:.1f}s "
              f"({result.events / max(result.seconds, 1e-9):,.0f}/s); end offsets "
              f"{result.offsets_flag() or '(none)'}")  # fmt: skip
        return 0
    print(
        f"wrote {result.events:,} events ({result.malformed:,} malformed) to {cfg.topic} in "
        f"{result.seconds:.1f}s; end offsets {result.offsets_flag() or '(none)'}"
    )
    if cfg.truth_path:
        print(f"truth: {cfg.truth_path}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    cfg = validate.config_from_args(args)
    done = validate.run(cfg)
    if done is None:
        return 0
    dead = done["dead_letters"]
    if done["records"] is None:
        print(f"validated {cfg.input_topic} in {done['seconds']:.1f}s: {dead:,} to "
              f"{cfg.dead_letter_topic}")  # fmt: skip
    else:
        print(
            f"validated {done['records']:,} records of {cfg.input_topic} in "
            f"{done['seconds']:.1f}s: {done['records'] - dead:,} valid to {cfg.output_topic}, "
            f"{dead:,} to {cfg.dead_letter_topic}"
        )
    return 0


def _train(args: argparse.Namespace) -> int:
    summary = train.run(train.config_from_args(args))
    train.print_summary(summary)
    return 0


def _serve(args: argparse.Namespace) -> int:
    summary = serve.run(serve.config_from_args(args))
    if summary is not None:
        serve.print_summary(summary)
    return 0


def _snapshot(args: argparse.Namespace) -> int:
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


def _export(args: argparse.Namespace) -> int:
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


def _report(args: argparse.Namespace) -> int:
    from flink_jobs.report import read_metrics, write_report

    docs = read_metrics(kafka_config(args), args.metrics_topic, idle=args.idle)
    truth = _json_file(args.truth, "--truth") if args.truth else None
    serving = (
        _json_file(args.serving_summary, "--serving-summary") if args.serving_summary else None
    )
    print(f"wrote {write_report(docs, args.out, args.run, truth, serving)}")
    return 0


def _cluster(args: argparse.Namespace) -> int:
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


def _submit(args: argparse.Namespace) -> int:
    from flink_jobs import cluster

    if args.from_savepoint and not Path(args.from_savepoint.removeprefix("file:")).exists():
        raise StreamshardError(f"--from-savepoint {args.from_savepoint}: no such savepoint")
    return cluster.submit(
        args.job, args.job_args, args.jobmanager, args.detached, args.from_savepoint
    )


def _jobs(args: argparse.Namespace) -> int:
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


def _tail(args: argparse.Namespace) -> int:
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


def _demo(args: argparse.Namespace) -> int:
    from flink_jobs.demo import run_demo

    return run_demo(args)


def _broker_args(p: Parser) -> None:
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")


def _topics_args(p: Parser) -> None:
    p.add_argument("action", choices=["create", "list", "delete"])
    p.add_argument("names", nargs="*", metavar="TOPIC")
    p.add_argument("--partitions", type=int, default=1)
    add_kafka_args(p)


def _snapshot_args(p: Parser) -> None:
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


def _export_args(p: Parser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="a snapshot directory")
    p.add_argument("--to", default="sklearn", choices=["sklearn"])
    p.add_argument("--out", required=True, metavar="FILE")


def _report_args(p: Parser) -> None:
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


def _cluster_args(p: Parser) -> None:
    p.add_argument("action", choices=["start", "stop", "status", "add-taskmanager"])
    p.add_argument("--taskmanagers", type=int, default=1)
    p.add_argument("--slots", type=int, default=2, help="task slots per TaskManager")
    p.add_argument(
        "--bind-host", default="127.0.0.1", help="REST and RPC address (default loopback only)"
    )
    p.add_argument("--rest-port", type=int, default=8081)


def _submit_args(p: Parser) -> None:
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


def _jobs_args(p: Parser) -> None:
    p.add_argument("action", choices=["list", "cancel", "stop-with-savepoint"])
    p.add_argument("job_id", nargs="?", metavar="JOB_ID")
    p.add_argument("--jobmanager", default="127.0.0.1:8081", metavar="HOST:PORT")


def _tail_args(p: Parser) -> None:
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


def _demo_args(p: Parser) -> None:
    p.add_argument("--events", type=int, default=20_000, help="training events")
    p.add_argument("--requests", type=int, default=3_000, help="serving requests")
    p.add_argument("--out", default="streamshard-demo", help="where the demo writes its files")


# command, help, the function that adds its flags, its handler
COMMANDS = (
    ("broker", "start, stop or inspect the embedded Kafka broker", _broker_args, _broker),
    ("topics", "create, list or delete Kafka topics", _topics_args, _topics),
    (
        "generate",
        "write a synthetic event stream with a known true model",
        generate.add_arguments,
        _generate,
    ),
    (
        "validate",
        "Flink job: validate events, bad ones to dead-letters",
        validate.add_arguments,
        _validate,
    ),
    ("train", "Flink job: online training through a parameter server", train.add_arguments, _train),
    (
        "serve",
        "Flink job: answer prediction requests with the live model",
        serve.add_arguments,
        _serve,
    ),
    ("snapshot", "save the latest weights of each model to a directory", _snapshot_args, _snapshot),
    ("export", "turn a snapshot into a scikit-learn pipeline file", _export_args, _export),
    ("report", "write index.html with plots of a run's metrics", _report_args, _report),
    ("cluster", "start, stop or inspect a local standalone Flink cluster", _cluster_args, _cluster),
    ("submit", "run a job on a Flink cluster with `flink run -py`", _submit_args, _submit),
    ("jobs", "list, cancel or stop-with-savepoint jobs on a cluster", _jobs_args, _jobs),
    ("tail", "print the records of a topic as JSON lines", _tail_args, _tail),
    ("demo", "broker, stream, train, snapshot, serve, report: end to end", _demo_args, _demo),
)


def build_parser() -> Parser:
    parser = Parser(
        prog="streamshard",
        description="Streaming machine learning on PyFlink and Kafka.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name, help_text, add_args, handler in COMMANDS:
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(func=handler)
        # `streamshard train --debug` as well as `--debug train`
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")  # fmt: skip
    return parser


def _check_global_options(parser: Parser, argv: list[str]) -> None:
    """Name an unknown option given before the command (argparse would only say that the
    command is missing)."""
    for arg in argv:
        if not arg.startswith("-"):
            return
        if arg not in ("--debug", "-h", "--help"):
            parser.error(f"unrecognized option {arg} (options of a command follow the command)")


def _root_cause(exc: BaseException) -> str:
    """The innermost Java cause of a failed Flink job, on one line."""
    lines = [line.strip() for line in str(exc).splitlines()]
    causes = [line for line in lines if line.startswith(("Caused by:", ": "))]
    line = causes[-1] if causes else next((x for x in lines if x), repr(exc))
    return line.removeprefix("Caused by:").removeprefix(":").strip()[:500]


CLEANUP_GRACE_S = 60


def _interrupt(signum, frame) -> None:
    """Ctrl-C or SIGTERM: unwind (context managers stop the broker and jobs they started),
    and if that cleanup hangs (a py4j call into a JVM that is itself shutting down, say),
    kill every process this one started and exit after ``CLEANUP_GRACE_S`` seconds."""
    timer = threading.Timer(CLEANUP_GRACE_S, _kill_descendants_and_exit)
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


def _kill_descendants_and_exit() -> None:
    print("streamshard: cleanup did not finish; killing what this command started",
          file=sys.stderr)  # fmt: skip
    from flink_jobs.procs import descendants

    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(130)


def run_command(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `submit JOB [flags] -- JOB FLAGS`: what follows `--` belongs to the job, untouched
    job_args: list[str] = []
    if "submit" in argv and "--" in argv[argv.index("submit") :]:
        cut = argv.index("--", argv.index("submit"))
        argv, job_args = argv[:cut], argv[cut + 1 :]
    _check_global_options(parser, argv)
    args = parser.parse_args(argv)
    args.job_args = job_args
    # SIGTERM (kill, a supervisor) stops a command like Ctrl-C does, so context managers stop
    # the broker and jobs they started instead of leaving them behind
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
    args.debug = args.debug or bool(os.environ.get("STREAMSHARD_DEBUG"))
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("streamshard: interrupted", file=sys.stderr)
        return 130
    except StreamshardError as exc:
        if args.debug:
            raise
        print(f"streamshard {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if args.debug:
            raise
        if type(exc).__name__ == "Py4JJavaError":
            print(f"streamshard {args.command}: job failed: {_root_cause(exc)}", file=sys.stderr)
            return 1
        print(
            f"streamshard {args.command}: error: {type(exc).__name__}: {exc} "
            "(run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def main(argv: list[str] | None = None) -> int:
    return run_command(argv)


if __name__ == "__main__":
    raise SystemExit(main())
