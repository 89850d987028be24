"""A local standalone Flink cluster from the scripts that ship with PyFlink, and job control.

``streamshard cluster start [--taskmanagers N]`` writes a config under
``.streamshard/cluster/conf`` (REST and RPC bound to 127.0.0.1 unless ``--bind-host`` says
otherwise), then starts one JobManager and N TaskManagers as separate processes with
``jobmanager.sh`` / ``taskmanager.sh`` (logs in ``.streamshard/cluster/log``). ``submit`` runs
``flink run -py`` with this interpreter for the Python workers and the project's packages
shipped with ``-pyfs``; ``jobs`` lists, cancels or stops jobs with a savepoint through the
REST API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from connectors.broker import state_dir
from connectors.config import is_secret
from connectors.errors import StreamshardError

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("connectors", "operators", "flink_jobs")
JOBS = ("train", "validate", "serve")  # what `submit` runs: `flink run -py cli.py JOB`


class ClusterError(StreamshardError):
    """The local cluster cannot be started, reached or controlled; the message says why."""


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def cluster_dir() -> Path:
    return state_dir() / "cluster"


@dataclass(frozen=True)
class ClusterSettings:
    taskmanagers: int = 1
    slots: int = 2
    rest_port: int = 8081
    rpc_port: int = 6123
    bind_host: str = "127.0.0.1"
    tm_memory: str = "1600m"
    jm_memory: str = "1200m"

    def __post_init__(self) -> None:
        for name in ("taskmanagers", "slots"):
            if getattr(self, name) < 1:
                raise ClusterError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("rest_port", "rpc_port"):
            if not 0 < getattr(self, name) < 65536:
                flag = name.replace("_", "-")
                raise ClusterError(f"--{flag} must be a port (1-65535), got {getattr(self, name)}")

    @property
    def rest(self) -> str:
        return f"http://{self.bind_host}:{self.rest_port}"

    @property
    def loopback(self) -> bool:
        return self.bind_host in ("localhost", "::1") or self.bind_host.startswith("127.")


# On 2 cores C2 compiled for much of a short job and G1's structures cost memory: with the
# serial collector and C1 the benchmark's cluster row went from a 3.1 GiB peak to 2.55 and
# about doubled its rate (docs/operations.md). The client only waits for the job.
CLIENT_JAVA_OPTS = "-Xmx192m -XX:+UseSerialGC -XX:TieredStopAtLevel=1"
JOBMANAGER_JAVA_OPTS = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"
TASKMANAGER_JAVA_OPTS = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"


def _java_opts() -> str:
    """The ``env.java.opts.all`` PyFlink's own config ships (module opens Java 17 needs)."""
    text = (flink_home() / "conf" / "config.yaml").read_text()
    for line in text.splitlines():
        if line.strip().startswith("all:") and "--add-opens" in line:
            return line.split(":", 1)[1].strip()
    return ""


def write_config(s: ClusterSettings) -> Path:
    conf = cluster_dir() / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (cluster_dir() / "log").mkdir(exist_ok=True)  # flink-daemon.sh does not make it
    checkpoints = (cluster_dir() / "checkpoints").resolve().as_uri()
    savepoints = (cluster_dir() / "savepoints").resolve().as_uri()
    settings = {
        "env.java.opts.all": _java_opts(),
        "env.java.opts.client": CLIENT_JAVA_OPTS,
        "env.java.opts.jobmanager": JOBMANAGER_JAVA_OPTS,
        "env.java.opts.taskmanager": TASKMANAGER_JAVA_OPTS,
        "jobmanager.bind-host": s.bind_host,
        "jobmanager.rpc.address": s.bind_host,
        "jobmanager.rpc.port": s.rpc_port,
        "jobmanager.memory.process.size": s.jm_memory,
        "taskmanager.bind-host": s.bind_host,
        "taskmanager.host": s.bind_host,
        "taskmanager.numberOfTaskSlots": s.slots,
        "taskmanager.memory.process.size": s.tm_memory,
        "rest.address": s.bind_host,
        "rest.bind-address": s.bind_host,
        "rest.port": s.rest_port,
        "blob.server.port": "6124-6130",
        "taskmanager.rpc.port": "6131-6140",
        "parallelism.default": 1,
        # short queues between operators: a push queued in front of a shard is staleness
        # (train's local default too, see flink_jobs/train.py LOCAL_OPTIONS)
        "taskmanager.memory.segment-size": "8kb",
        # a job's subtasks spread over the TaskManagers: losing one costs a part, not all
        "taskmanager.load-balance.mode": "SLOTS",
        # notice a killed TaskManager in seconds rather than Flink's default 50 s
        "heartbeat.interval": 2000,
        "heartbeat.timeout": 10000,
        "execution.checkpointing.dir": checkpoints,
        "execution.checkpointing.savepoint-dir": savepoints,
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
    }
    lines = [f"{k}: {json.dumps(v) if isinstance(v, str) else v}" for k, v in settings.items()]
    (conf / "config.yaml").write_text("\n".join(lines) + "\n")
    for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties"):
        source = flink_home() / "conf" / name
        if source.exists():
            (conf / name).write_text(source.read_text())
    (conf / "masters").write_text(f"{s.bind_host}:{s.rest_port}\n")
    (conf / "workers").write_text(f"{s.bind_host}\n")
    (cluster_dir() / "settings.json").write_text(json.dumps(s.__dict__))
    return conf


def _env() -> dict:
    d = cluster_dir()
    return {
        **os.environ,
        "FLINK_HOME": str(flink_home()),
        "FLINK_CONF_DIR": str(d / "conf"),
        "FLINK_LOG_DIR": str(d / "log"),
        "FLINK_PID_DIR": str(d / "pid"),
    }


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    script = flink_home() / "bin" / name
    out = subprocess.run(
        ["bash", str(script), *args], env=_env(), capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        raise ClusterError(
            f"{name} {' '.join(args)} failed: {(out.stderr or out.stdout).strip()[-300:]}"
        )
    return out


def rest(s: ClusterSettings, path: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"{s.rest}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        raise ClusterError(
            f"{method} {path}: HTTP {exc.code}: {exc.read().decode()[:300]}"
        ) from exc
    except OSError as exc:
        raise ClusterError(
            f"no Flink REST API at {s.rest} ({exc}); `streamshard cluster start`?"
        ) from exc
    return json.loads(text) if text else {}


def load_settings() -> ClusterSettings:
    path = cluster_dir() / "settings.json"
    return ClusterSettings(**json.loads(path.read_text())) if path.exists() else ClusterSettings()


def overview(s: ClusterSettings) -> dict:
    return rest(s, "/overview")


def start(s: ClusterSettings, timeout: float = 120) -> dict:
    try:
        overview(s)
        raise ClusterError(f"a Flink cluster already answers at {s.rest}; stop it first")
    except ClusterError as exc:
        if "already answers" in str(exc):
            raise
    write_config(s)
    _script("jobmanager.sh", "start")
    for _ in range(s.taskmanagers):
        _script("taskmanager.sh", "start")
    return wait_for_taskmanagers(s, s.taskmanagers, timeout)


def wait_for_taskmanagers(s: ClusterSettings, count: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = overview(s)
            if last.get("taskmanagers", 0) >= count:
                return last
        except ClusterError:
            pass
        time.sleep(0.5)
    raise ClusterError(f"the cluster did not come up with {count} TaskManagers in {timeout:.0f}s "
                       f"(last overview {last}); logs in {cluster_dir() / 'log'}")  # fmt: skip


def add_taskmanager() -> None:
    _script("taskmanager.sh", "start")


def running_daemons() -> list[Path]:
    """Pid files of this cluster's JobManager and TaskManagers (Flink's scripts keep them)."""
    pid_dir = cluster_dir() / "pid"
    return [p for p in pid_dir.glob("*.pid") if p.read_text().split()] if pid_dir.is_dir() else []


def stop() -> bool:
    """Stop this cluster's processes; False when none was running."""
    running = bool(running_daemons())
    if running:
        _script("taskmanager.sh", "stop-all")
        _script("jobmanager.sh", "stop-all")
    return bool(stop_orphaned_python_workers()) or running


def stop_orphaned_python_workers() -> list[int]:
    """Kill this cluster's PyFlink Python workers whose TaskManager is gone.

    A TaskManager killed with SIGKILL leaves its Python worker processes (pyflink-udf-runner.sh
    and beam_boot) running, adopted by init; they hold memory and some CPU until stopped.
    They are recognised by this cluster's FLINK_CONF_DIR in their environment.
    """
    import signal

    from flink_jobs.procs import parent_of

    conf = f"FLINK_CONF_DIR={cluster_dir() / 'conf'}".encode()
    killed = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes()
            if b"beam_boot" not in cmd and b"pyflink-udf-runner" not in cmd:
                continue
            if conf not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            ppid = parent_of(int(proc.name))
            parent = (Path("/proc") / str(ppid) / "cmdline").read_bytes() if ppid > 1 else b""
        except (OSError, ValueError, IndexError):
            continue
        if ppid == 1 or (b"java" not in parent and b"pyflink-udf-runner" not in parent):
            os.kill(int(proc.name), signal.SIGKILL)
            killed.append(int(proc.name))
    return killed


def checked_job_args(job_args: list[str]) -> list[str]:
    """The job's flags as ``flink run`` gets them: a secret may not ride on a command line
    (every user of the machine can read it in ``ps``, and Flink's client logs it), and a
    properties file is named by its absolute path (the job's driver runs elsewhere).

    >>> checked_job_args(["--kafka-properties-file", "/etc/k.properties", "-n", "3"])
    ['--kafka-properties-file', '/etc/k.properties', '-n', '3']
    """
    out = list(job_args)
    for i, arg in enumerate(out):
        name, eq, value = arg.partition("=")
        if name == "--kafka-property" and not eq and i + 1 < len(out):
            prop = out[i + 1].partition("=")[0]
        elif name == "--kafka-property":
            prop = value.partition("=")[0]
        else:
            prop = None
        if prop and is_secret(prop):
            raise ClusterError(
                f"--kafka-property {prop}=...: a secret on a command line is visible to every "
                "user of the machine; put it in a file given by --kafka-properties-file"
            )
        if name == "--kafka-properties-file":
            if eq:
                out[i] = f"{name}={Path(value).resolve()}"
            elif i + 1 < len(out):
                out[i + 1] = str(Path(out[i + 1]).resolve())
    return out


def submit(
    job: str, job_args: list[str], jobmanager: str, detached: bool, savepoint: str | None = None
) -> int:
    """``flink run -py`` the job module against ``jobmanager`` (HOST:PORT of its REST API)."""
    if job not in JOBS:
        raise ClusterError(f"unknown job {job!r} (expected one of {', '.join(JOBS)})")
    entry = PROJECT / "flink_jobs" / "cli.py"  # `flink run -py cli.py JOB FLAGS`
    job_args = checked_job_args(job_args)
    host, _, port = jobmanager.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--jobmanager must be HOST:PORT, got {jobmanager!r}")
    overview(ClusterSettings(bind_host=host, rest_port=int(port)))  # fails fast, one line
    cmd = [
        "bash", str(flink_home() / "bin" / "flink"), "run", "-m", jobmanager,
        "-py", str(entry), "-pyexec", sys.executable, "-pyclientexec", sys.executable,
        "-pyfs", ",".join(str(PROJECT / p) for p in PACKAGES),
        *(["-d"] if detached else []), *(["-s", savepoint] if savepoint else []),
        job, *job_args,
    ]  # fmt: skip
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    env["STREAMSHARD_JOBMANAGER"] = jobmanager  # read by flink_jobs.env.make_env
    return subprocess.run(cmd, env=env).returncode


def jobs(s: ClusterSettings) -> list[dict]:
    return rest(s, "/jobs/overview").get("jobs", [])


def cancel(s: ClusterSettings, job_id: str) -> None:
    rest(s, f"/jobs/{job_id}", method="PATCH")


def stop_with_savepoint(s: ClusterSettings, job_id: str, timeout: float = 300) -> str:
    trigger = rest(s, f"/jobs/{job_id}/stop", "POST", {"drain": False, "formatType": "CANONICAL"})
    request = trigger["request-id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = rest(s, f"/jobs/{job_id}/savepoints/{request}")
        if status["status"]["id"] == "COMPLETED":
            op = status.get("operation", {})
            if "failure-cause" in op:
                raise ClusterError(f"savepoint failed: {op['failure-cause'].get('class')}")
            return op["location"]
        time.sleep(0.5)
    raise ClusterError(f"savepoint of {job_id} not done after {timeout:.0f}s")
