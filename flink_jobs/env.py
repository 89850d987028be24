"""The one place a ``StreamExecutionEnvironment`` is built from a job's settings.

Locally this is an embedded mini-cluster; under ``flink run`` the same call returns the
cluster's environment, so job code is the same in both places.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
from dataclasses import dataclass

from pyflink.common import Configuration
from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment

from connectors.errors import ConfigError
from flink_jobs.cluster import PROJECT

THREAD_BOOT = PROJECT / "flink_jobs" / "thread_boot"  # sitecustomize.py for thread mode

STATE_BACKENDS = ("hashmap", "rocksdb")
EXECUTION_MODES = ("auto", "process", "thread")
MIN_HEAP_MB = 1536  # the local mini-cluster's smallest heap (``local_heap_mb``)
CHECKPOINT_MODES = {
    "exactly-once": CheckpointingMode.EXACTLY_ONCE,
    "at-least-once": CheckpointingMode.AT_LEAST_ONCE,
}


@dataclass(frozen=True)
class FlinkSettings:
    """How a job runs: parallelism, checkpoints, state backend, Python execution."""

    parallelism: int = 1
    max_parallelism: int = 128
    checkpoint_interval_ms: int = 2000
    checkpoint_mode: str = "exactly-once"
    state_backend: str = "hashmap"
    checkpoint_dir: str | None = None
    execution_mode: str = "auto"  # or thread, or process: see python_execution_mode()
    python_executable: str = sys.executable
    bundle_size: int = 1000
    bundle_time_ms: int = 100
    # a lost TaskManager costs a few failed deployments until the JobManager notices it
    # (heartbeat timeout), so allow ~40 s of restarts, not 5 s
    restart_attempts: int = 20
    buffer_timeout_ms: int = 100
    # the local mini-cluster's heap (``local_heap_mb``); $JVM_ARGS wins
    jvm_heap_mb: int = MIN_HEAP_MB
    options: tuple = ()  # (key, value) pairs of Flink configuration, set last
    job_options: tuple = ()  # those of ``options`` the job chose itself: known good, not checked

    def checkpoint_uri(self) -> str:
        if self.checkpoint_dir:
            return self.checkpoint_dir
        from connectors.broker import state_dir

        return (state_dir() / "checkpoints").resolve().as_uri()

    def __post_init__(self) -> None:
        if self.parallelism < 1:
            raise ConfigError(f"--parallelism must be >= 1, got {self.parallelism}")
        if self.checkpoint_interval_ms < 0:
            raise ConfigError(
                "--checkpoint-interval must be >= 0 ms (0 = off), "
                f"got {self.checkpoint_interval_ms}"
            )
        if self.checkpoint_mode not in CHECKPOINT_MODES:
            raise ConfigError(f"checkpoint mode must be one of {sorted(CHECKPOINT_MODES)}")
        if self.state_backend not in STATE_BACKENDS:
            raise ConfigError(
                f"--state-backend must be one of {STATE_BACKENDS}, got {self.state_backend!r}"
            )
        if self.execution_mode not in EXECUTION_MODES:
            raise ConfigError(
                f"--execution-mode must be one of {EXECUTION_MODES}, got {self.execution_mode!r}"
            )


def python_execution_mode(s: FlinkSettings, on_cluster: bool) -> str:
    """``auto`` (the default of ``train`` and ``validate``): ``thread`` on the local
    mini-cluster, ``process`` on a cluster.

    Locally PyFlink's loopback mode runs every Python function inside this one process
    anyway, so thread mode (Python inside the JVM, no Beam/gRPC hop) loses no parallelism
    and made a training run 2-3x faster here (decision 0006). On a cluster, process mode
    gives each slot its own interpreter (no shared GIL) and keeps a Python crash out of the
    TaskManager. Thread mode's start-up deadlock is prevented by ``THREAD_BOOT``.
    ``serve`` defaults to ``thread`` for latency (decision 0008).
    """
    if s.execution_mode != "auto":
        return s.execution_mode
    return "process" if on_cluster else "thread"


def flink_configuration(s: FlinkSettings, on_cluster: bool = False) -> Configuration:
    mode = python_execution_mode(s, on_cluster)
    if mode == "thread":
        # thread mode runs Python inside the JVM, which must find the venv's packages and this
        # project (an editable install's .pth file is not read from PYTHONPATH); set before
        # ``Configuration()``, whose first call starts the gateway JVM with this environment
        # ``THREAD_BOOT``'s sitecustomize imports the jobs' modules on pemja's main interpreter
        # thread, before any operator opens: a start-up deadlock otherwise (its docstring)
        path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        for entry in (str(PROJECT), sysconfig.get_paths()["purelib"], str(THREAD_BOOT)):
            if entry not in path:
                path.insert(0, entry)
        os.environ["PYTHONPATH"] = os.pathsep.join(path)
        os.environ["STREAMSHARD_THREAD_BOOT"] = "1"
    conf = Configuration()
    conf.set_string("python.executable", s.python_executable)
    conf.set_string("python.client.executable", s.python_executable)
    conf.set_string("python.execution-mode", mode)
    conf.set_string("python.fn-execution.bundle.size", str(s.bundle_size))
    conf.set_string("python.fn-execution.bundle.time", str(s.bundle_time_ms))
    conf.set_string("state.backend.type", s.state_backend)
    conf.set_string("pipeline.max-parallelism", str(s.max_parallelism))
    # Checkpoints go to a file system: the default (JobManager memory) refuses state over 5 MB,
    # which one task's replica already exceeds.
    conf.set_string("execution.checkpointing.dir", s.checkpoint_uri())
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", str(s.restart_attempts))
    conf.set_string("restart-strategy.fixed-delay.delay", "2 s")
    check_options(tuple(o for o in s.options if o not in s.job_options))
    for key, value in s.options:
        conf.set_string(key, value)
    return conf


OPTION_CLASSES = [f"org.apache.flink.configuration.{name}" for name in (
    "TaskManagerOptions", "JobManagerOptions", "CheckpointingOptions", "CoreOptions",
    "NettyShuffleEnvironmentOptions", "RestOptions", "StateBackendOptions", "PipelineOptions",
    "ExecutionOptions", "DeploymentOptions", "HeartbeatManagerOptions", "MetricOptions",
    "RestartStrategyOptions", "StateRecoveryOptions", "StateChangelogOptions",
    "ClusterOptions", "WebOptions", "BlobServerOptions", "AkkaOptions", "RpcOptions",
)] + ["org.apache.flink.python.PythonOptions"]  # fmt: skip


def check_options(options: tuple[tuple[str, str], ...]) -> None:
    """Parse each ``--flink-option`` value as its option's type, so a bad one is named
    before the job starts (Flink would fail later with only the parser's message)."""
    if not options:
        return
    from py4j.protocol import Py4JJavaError
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    known = _config_options(jvm, {key for key, _ in options})
    for key, value in options:
        if key not in known:
            continue
        probe = jvm.org.apache.flink.configuration.Configuration()
        probe.setString(key, value)
        try:
            probe.get(known[key])
        except Py4JJavaError as exc:
            cause = exc.java_exception
            while cause.getCause() is not None:
                cause = cause.getCause()
            raise ConfigError(
                f"--flink-option {key}={value}: {cause.getClass().getSimpleName()}: "
                f"{cause.getMessage()}"
            ) from None


def _config_options(jvm, keys: set[str]) -> dict:
    """The ``ConfigOption`` objects of ``keys`` found in Flink's option classes."""
    found = {}
    for name in OPTION_CLASSES:
        try:
            fields = jvm.java.lang.Class.forName(name).getFields()
        except Exception:  # a class this Flink version does not have
            continue
        for f in fields:
            if f.getType().getName() != "org.apache.flink.configuration.ConfigOption":
                continue
            option = f.get(None)
            if option.key() in keys:
                found[option.key()] = option
    return found


# The local mini-cluster's JVM is started by PyFlink's gateway launcher, which adds $JVM_ARGS.
# C1 only: on this 2-core machine the C2 compiler took a third of a core for the whole of a
# one-minute training run; without it the same run went from 407 to 509 events/s (README).
LOCAL_JVM_ARGS = "-XX:TieredStopAtLevel=1"


def local_heap_mb(bits: int, workers: int) -> int:
    """The local mini-cluster's heap: 1 GiB for Flink, plus three times the keyed state of
    one task whose model is dense (each worker's replica and the shards' ranges, four arrays
    of 8-byte floats per coordinate), at least 1,536 MiB, in steps of 256. Left to itself
    the JVM takes a quarter of the machine's memory (6 GiB here) and the heap grows into it
    whether the job needs it or not (decision 0012).

    >>> local_heap_mb(20, 2), local_heap_mb(24, 2)
    (1536, 5632)
    """
    state_mb = 8 * 4 * ((1 << bits) + 1) * (workers + 1) / (1 << 20)
    return max(MIN_HEAP_MB, -(-int(1024 + 3 * state_mb) // 256) * 256)


def local_jvm_args(heap_mb: int) -> str:
    return f"{LOCAL_JVM_ARGS} -Xmx{heap_mb}m"


JOBMANAGER_ENV = "STREAMSHARD_JOBMANAGER"  # set by `streamshard submit` for the job's process


def make_env(s: FlinkSettings) -> StreamExecutionEnvironment:
    target = os.environ.get(JOBMANAGER_ENV)
    under_flink_run = bool(os.environ.get("PYFLINK_GATEWAY_PORT"))  # set by `flink run` only
    if not under_flink_run:  # before the first gateway call (``Configuration()`` starts the JVM)
        os.environ.setdefault("JVM_ARGS", local_jvm_args(s.jvm_heap_mb))
    conf = flink_configuration(s, on_cluster=under_flink_run)
    if under_flink_run and target:
        # under `streamshard submit` (flink run): the Python process builds its environment
        # from this configuration, not from the CLI's -m, so name the cluster here
        host, _, port = target.rpartition(":")
        conf.set_string("execution.target", "remote")
        conf.set_string("rest.address", host)
        conf.set_string("rest.port", port)
        conf.set_string("jobmanager.rpc.address", host)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    if threading.excepthook is not quiet_hang_up:
        quiet_hang_up.previous = threading.excepthook
        threading.excepthook = quiet_hang_up
    env.set_parallelism(s.parallelism)
    env.set_max_parallelism(s.max_parallelism)
    env.set_buffer_timeout(s.buffer_timeout_ms)
    if s.checkpoint_interval_ms > 0:
        env.enable_checkpointing(s.checkpoint_interval_ms, CHECKPOINT_MODES[s.checkpoint_mode])
    return env


def quiet_hang_up(args) -> None:
    """``threading.excepthook`` for a job's driver: a local job's Python functions run in
    Beam threads of this process, and when the mini-cluster ends the job one of them may
    report the gRPC stream's ``CANCELLED`` ("Multiplexer hanging up") as a traceback. That
    is the end of the job, not an error: it is dropped; anything else goes to the previous
    hook.

    >>> import grpc
    >>> class HangUp(grpc.RpcError):
    ...     def code(self):
    ...         return grpc.StatusCode.CANCELLED
    >>> seen, saved = [], quiet_hang_up.previous
    >>> quiet_hang_up.previous = lambda args: seen.append(args.exc_type.__name__)
    >>> class Args:
    ...     def __init__(self, exc):
    ...         self.exc_type, self.exc_value = type(exc), exc
    >>> quiet_hang_up(Args(HangUp())), quiet_hang_up(Args(ValueError("x"))), seen
    (None, None, ['ValueError'])
    >>> quiet_hang_up.previous = saved
    """
    try:
        import grpc

        if isinstance(args.exc_value, grpc.RpcError) and (
            args.exc_value.code() == grpc.StatusCode.CANCELLED
        ):
            return
    except Exception:  # an exception whose code() fails is reported as it is
        pass
    quiet_hang_up.previous(args)


quiet_hang_up.previous = threading.excepthook


def cancel_quietly(client) -> None:
    """Cancel the job of ``client`` (a ``JobClient``); one that already ended is left as it is."""
    try:
        client.cancel().result()
    except Exception:  # already ended
        pass
