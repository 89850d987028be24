"""Flags shared by every command: where Kafka is, how Flink runs, and one-line errors."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from connectors.broker import read_record
from connectors.config import BOOTSTRAP_ENV, KafkaConfig
from connectors.errors import ConfigError
from connectors.events import DEFAULT_CLIP
from operators.settings import flag_of


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless the help names it or there is none."""

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and self._shows_default(action):
            action.help = "(default %(default)s)"  # an option without help still gets one
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not self._shows_default(action):
            return text
        return f"{text} (default %(default)s)"

    @staticmethod
    def _shows_default(action: argparse.Action) -> bool:
        default = action.default
        empty = default is None or default is False or default == []
        return bool(action.option_strings) and not empty and default != argparse.SUPPRESS


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and exit status 2, and whose help
    shows defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # noqa: D102 - argparse hook
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def add_field_flags(group, cls) -> None:
    """A flag for every field of the settings class ``cls`` that has a ``help`` (see
    ``operators.settings``): its default and type are the field's, so a default is written
    once."""
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        meta = {k: v for k, v in f.metadata.items() if k != "flag"}
        flag = flag_of(cls, f.name)
        if isinstance(f.default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                               **meta)  # fmt: skip
        else:
            meta.setdefault("type", type(f.default))
            group.add_argument(flag, default=f.default, **meta)


def fields_from_args(cls, args: argparse.Namespace) -> dict:
    """The values of ``cls``'s flags (``add_field_flags``), by field name."""
    return {f.name: getattr(args, flag_of(cls, f.name)[2:].replace("-", "_"))
            for f in dataclasses.fields(cls) if "help" in f.metadata}  # fmt: skip


def add_kafka_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kafka")
    group.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT[,...]",
        help=f"Kafka brokers (default: ${BOOTSTRAP_ENV}, else the broker started by "
        "`streamshard broker start`, else 127.0.0.1:9092)",
    )
    group.add_argument(
        "--kafka-property",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Kafka client property, e.g. security.protocol=SASL_SSL (repeatable)",
    )
    group.add_argument("--kafka-properties-file", metavar="PATH", help="Java-style properties file")


def kafka_config(args: argparse.Namespace) -> KafkaConfig:
    overrides = {}
    for item in args.kafka_property:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--kafka-property must be NAME=VALUE, got {item!r}")
        overrides[name.strip()] = value.strip()
    bootstrap = args.bootstrap_servers
    if not bootstrap and not os.environ.get(BOOTSTRAP_ENV):
        record = read_record()
        bootstrap = record.bootstrap_servers if record else None
    return KafkaConfig.from_sources(bootstrap, args.kafka_properties_file, overrides)


def add_clip_argument(parser: argparse.ArgumentParser, why: str) -> None:
    """``--clip-features X``: train and serve must clip hashed feature values alike."""
    parser.add_argument(
        "--clip-features", type=float, default=DEFAULT_CLIP, metavar="X",
        help=f"clip numeric feature values to [-X, X], {why} (0: no clipping)",
    )  # fmt: skip


def add_task_arguments(parser, verb: str, default_max: int, cost: str = "") -> None:
    """``--tasks A,B`` and ``--max-tasks N``: which tasks a job admits (``TaskGate``)."""
    parser.add_argument(
        "--tasks", metavar="A,B,...",
        help=f"{verb} only these tasks; events of others go to dead-letters",
    )  # fmt: skip
    parser.add_argument(
        "--max-tasks", type=int, metavar="N",
        help=f"{verb} at most N tasks, admitted as they arrive; events of the rest go to "
        f"dead-letters (default: the number of --tasks, else {default_max}{cost})",
    )  # fmt: skip


def clip_from_args(args: argparse.Namespace) -> float | None:
    """The clipping limit of ``--clip-features`` (None: no clipping)."""
    if not args.clip_features >= 0:
        raise ConfigError(f"--clip-features must be >= 0 (0: none), got {args.clip_features}")
    return args.clip_features or None


def add_flink_args(
    parser: argparse.ArgumentParser,
    bundle_time_ms: int = 100,
    buffer_timeout_ms: int = 100,
    execution_mode: str = "auto",
) -> None:
    group = parser.add_argument_group("Flink")
    group.add_argument("--parallelism", type=int, default=1, help="default operator parallelism")
    group.add_argument(
        "--checkpoint-interval",
        type=int,
        default=2000,
        metavar="MS",
        help="checkpoint every MS milliseconds; 0 turns checkpointing off (default 2000)",
    )
    group.add_argument("--state-backend", default="hashmap", choices=["hashmap", "rocksdb"])
    group.add_argument("--checkpoint-dir", metavar="URI", help="e.g. file:///tmp/ckpt")
    group.add_argument(
        "--execution-mode",
        default=execution_mode,
        choices=["auto", "process", "thread"],
        help=f"Python execution mode (default {execution_mode}; auto: thread on the local "
        "mini-cluster, where it is 2-3x faster, process on a cluster)",
    )
    group.add_argument(
        "--flink-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any Flink configuration option, e.g. taskmanager.memory.segment-size=4kb "
        "(repeatable; applied last)",
    )
    group.add_argument(
        "--bundle-size", type=int, default=1000, help="records per Python bundle (default 1000)"
    )
    group.add_argument(
        "--bundle-time",
        type=int,
        default=bundle_time_ms,
        metavar="MS",
        help=f"flush a Python bundle after MS milliseconds (default {bundle_time_ms})",
    )
    group.add_argument(
        "--buffer-timeout",
        type=int,
        default=buffer_timeout_ms,
        metavar="MS",
        help=f"flush network buffers after MS milliseconds (default {buffer_timeout_ms})",
    )


def fail_marker_from_args(args: argparse.Namespace, flink) -> str | None:
    """The hidden ``--inject-failure MARKER`` (tests only), which needs a checkpoint to fail
    after (``operators.faults.FailOnce``)."""
    if args.inject_failure and not flink.checkpoint_dir:
        raise ConfigError("--inject-failure needs --checkpoint-dir")
    return args.inject_failure


def flink_settings(args: argparse.Namespace):
    from connectors.hashing import MAX_BITS, MIN_BITS
    from flink_jobs.env import FlinkSettings, local_heap_mb

    options = []
    for item in args.flink_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--flink-option must be KEY=VALUE, got {item!r}")
        options.append((key.strip(), value.strip()))
    # the heap follows the model (validate has none); --hash-bits is checked later, once
    bits = min(max(getattr(args, "hash_bits", None) or 20, MIN_BITS), MAX_BITS)
    return FlinkSettings(
        options=tuple(options),
        jvm_heap_mb=local_heap_mb(bits, getattr(args, "workers", 1)),
        parallelism=args.parallelism,
        checkpoint_interval_ms=args.checkpoint_interval,
        state_backend=args.state_backend,
        checkpoint_dir=args.checkpoint_dir,
        execution_mode=args.execution_mode,
        bundle_size=args.bundle_size,
        bundle_time_ms=args.bundle_time,
        buffer_timeout_ms=args.buffer_timeout,
    )


def task_limits(tasks: str | None, max_tasks: int | None) -> tuple[tuple | None, int]:
    """``--tasks a,b`` and ``--max-tasks N`` checked: names in the decoder's alphabet, and
    an allow-list no longer than the limit (which defaults to the list's length, else 8).

    >>> task_limits("ctr,fraud", None)
    (('ctr', 'fraud'), 2)
    >>> task_limits(None, None)
    (None, 8)
    """
    from connectors.events import valid_task_name
    from operators.ps import DEFAULT_MAX_TASKS

    if max_tasks is not None and max_tasks < 1:
        raise ConfigError(f"--max-tasks must be >= 1, got {max_tasks}")
    if tasks is None:
        return None, max_tasks or DEFAULT_MAX_TASKS
    names = tuple(dict.fromkeys(t.strip() for t in tasks.split(",") if t.strip()))
    bad = [t for t in names if not valid_task_name(t)]
    if not names or bad:
        raise ConfigError(f"--tasks must be task names ([A-Za-z0-9_.-], 1-128), got {tasks!r}")
    if max_tasks is not None and len(names) > max_tasks:
        raise ConfigError(f"--tasks names {len(names)} tasks but --max-tasks is {max_tasks}")
    return names, max_tasks or len(names)


def hash_bits_from_args(args) -> int:
    """``--hash-bits``, checked (its models have ``2**bits + 1`` floats), and the
    ``--init-model`` snapshot, if any, checked against it."""
    bits = checked_bits(args.hash_bits)
    if getattr(args, "init_model", None):
        check_init_model(args.init_model, bits)
    return bits


def checked_bits(bits: int) -> int:
    """``--hash-bits``, or a one-line refusal."""
    from connectors.hashing import check_bits

    return check_bits(bits)


def check_init_model(path: str, bits: int) -> dict:
    """The ``--init-model`` snapshots by task, loaded and verified; refuse, with one line, a
    warm start that cannot work (bad snapshot, other hashing)."""
    from operators.snapshot import load_models

    models = load_models(path)
    for task, snap in models.items():
        if snap.bits != bits:
            raise ConfigError(
                f"--init-model {path}: task {task!r} was hashed with 2**{snap.bits} features, "
                f"this run with --hash-bits {bits}"
            )
    return models
