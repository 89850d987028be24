"""What a run costs the machine, read from ``/proc``: peak resident memory of a process tree
and CPU seconds by kind of process (JVM, Python, broker).

A process tree is sampled every 0.5 s; each process's CPU (user + system) is the last value
seen, so a process that exits loses at most its last half second. The broker is measured
from its own ``/proc`` entry before and after.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from flink_jobs.procs import descendants

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def proc_stat(pid: int) -> tuple[str, float, int] | None:
    """``(command name, CPU seconds, resident bytes)`` of ``pid``, or ``None`` if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return comm, (int(fields[11]) + int(fields[12])) / TICK, int(fields[21]) * PAGE


def kind(comm: str) -> str:
    """``jvm``, ``python`` or ``other``: PyFlink's driver runs as ``streamshard`` or
    ``python``, its workers as ``python``; Flink's JVMs as ``java``."""
    if comm == "java":
        return "jvm"
    if comm.startswith("python") or comm in ("streamshard", "pyflink-udf-run"):
        return "python"
    return "other"


class TreeUsage:
    """Peak RSS of ``pid`` and its descendants (plus the roots ``more()`` names, e.g. a
    standalone cluster's daemons) and their CPU seconds by kind; the broker's CPU apart."""

    def __init__(self, pid: int, more=lambda: [], broker_pid: int | None = None):
        self.pid, self.more, self.broker_pid = pid, more, broker_pid
        self.peak_mib, self.cpu = 0.0, {}  # pid -> (kind, seconds)
        self._broker_start = self._broker_cpu()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _broker_cpu(self) -> float:
        stat = proc_stat(self.broker_pid) if self.broker_pid else None
        return stat[1] if stat else 0.0

    def _sample(self) -> None:
        roots = [self.pid, *self.more()]
        rss = 0
        for pid in {*roots, *(p for root in roots for p in descendants(root))}:
            stat = proc_stat(pid)
            if stat is None:
                continue
            comm, seconds, resident = stat
            rss += resident
            self.cpu[pid] = (kind(comm), seconds)
        self.peak_mib = max(self.peak_mib, rss / 2**20)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.5)

    def stop(self) -> dict:
        """Stop sampling; ``{"peak_rss_mib", "cpu_s": {"jvm", "python", "other", "broker"}}``."""
        self._sample()
        self._stop.set()
        self._thread.join()
        cpu = {"jvm": 0.0, "python": 0.0, "other": 0.0}
        for k, seconds in self.cpu.values():
            cpu[k] += seconds
        cpu["broker"] = self._broker_cpu() - self._broker_start
        return {"peak_rss_mib": self.peak_mib, "cpu_s": cpu}


def per_event_us(cpu_s: dict, events: int) -> dict:
    """CPU µs per event by kind."""
    return {k: v / max(events, 1) * 1e6 for k, v in cpu_s.items()}
