"""The ``streamshard`` command line: one subcommand per job or tool.

Errors a user can cause print one line and exit 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from connectors.errors import StreamshardError
from flink_jobs import generate, serve, tools, train, validate
from flink_jobs.options import (
    Parser,
)

EXIT_USAGE = 2


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
    from flink_jobs.train_run import run

    summary = run(train.config_from_args(args))
    train.print_summary(summary)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from flink_jobs.serve_run import run

    summary = run(serve.config_from_args(args))
    if summary is not None:
        serve.print_summary(summary)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from flink_jobs.demo import run_demo

    return run_demo(args)


def _demo_args(p: Parser) -> None:
    p.add_argument("--events", type=int, default=20_000, help="training events")
    p.add_argument("--requests", type=int, default=3_000, help="serving requests")
    p.add_argument("--out", default="streamshard-demo", help="where the demo writes its files")


# command, help, the function that adds its flags, its handler
COMMANDS = (
    ("broker", "start, stop or inspect the embedded Kafka broker", tools.broker_args, tools.broker),
    ("topics", "create, list or delete Kafka topics", tools.topics_args, tools.topics),
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
    (
        "snapshot",
        "save the latest weights of each model to a directory",
        tools.snapshot_args,
        tools.snapshot,
    ),
    (
        "export",
        "turn a snapshot into a scikit-learn pipeline file",
        tools.export_args,
        tools.export,
    ),
    ("report", "write index.html with plots of a run's metrics", tools.report_args, tools.report),
    (
        "cluster",
        "start, stop or inspect a local standalone Flink cluster",
        tools.cluster_args,
        tools.cluster,
    ),
    (
        "submit",
        "run a job on a Flink cluster with `flink run -py`",
        tools.submit_args,
        tools.submit,
    ),
    ("jobs", "list, cancel or stop-with-savepoint jobs on a cluster", tools.jobs_args, tools.jobs),
    ("tail", "print the records of a topic as JSON lines", tools.tail_args, tools.tail),
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
