"""The parameter server's loop decisions, pure: range sharding, mini-batch plans, the
consistency rule, task admission and state digests. The shard's server function is in
``operators/shard_server.py``, the workers' replicas in ``replica.py``, the dense working
copy in ``dense_range.py``. No pyflink import: the Flink adapters (``operators/worker_fn.py``,
``shard_fn.py``) only move these objects' inputs and outputs in and out of state.

Coordinates ``[0, 2**bits]`` (the last one is the intercept) are split into ``S`` contiguous
ranges (Li et al., OSDI 2014, range partitioning); inside a shard they are stored in blocks of
``BLOCK`` coordinates, so a checkpoint only rewrites the blocks a push touched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from connectors.errors import ConfigError

BLOCK = 4096  # the default; `train --block-size` chooses (see the README's measurements)
DEFAULT_BATCH_SIZE = 1000  # `train --batch-size` (decision 0009)


def shard_width(dim: int, shards: int) -> int:
    return -(-dim // shards)


def timer_lapsed(at: int | None, now: int, period_ms: int) -> bool:
    """Whether a keyed function must register a new processing-time timer: none is pending
    (``at`` is None), or the one recorded for ``at`` is more than a period overdue, lost in a
    restore (its flag in state came back, the timer did not fire; a function that trusted
    the flag would never set another).

    >>> timer_lapsed(None, 5_000, 200), timer_lapsed(5_100, 5_000, 200)
    (True, False)
    >>> timer_lapsed(4_900, 5_000, 200), timer_lapsed(4_700, 5_000, 200)
    (False, True)
    """
    return at is None or at < now - period_ms


def batch_size_at(clock: int, batch_size: int, warmup: bool = True) -> int:
    """The size of mini-batch number ``clock``: with ``warmup`` it grows by an eighth per
    mini-batch from 1 (``floor(1.125**clock)``, in integers) up to ``batch_size``, so a young
    model takes many small steps (with 1,000: 59 steps over the first ~8,000 events, where
    doubling took 10 over 1,023; decision 0009).

    >>> [batch_size_at(k, 1000) for k in (0, 5, 6, 10, 20, 40, 58, 59)]
    [1, 1, 2, 3, 10, 111, 926, 1000]
    """
    if not warmup:
        return batch_size
    c = min(clock, 8 * batch_size.bit_length())  # 1.125**8 > 2: past this it is batch_size
    return max(1, min(batch_size, 9**c // 8**c))


def whole_batches(limit: int, batch_size: int, warmup: bool = True) -> tuple[int, int]:
    """``(events, mini-batches)``: the most events, up to ``limit``, that one worker cuts into
    whole mini-batches only (a run with ``--batch-timeout 0`` trains no partial one).

    >>> whole_batches(4100, 100)
    (4064, 72)
    """
    events = clock = 0
    while events + (size := batch_size_at(clock, batch_size, warmup)) <= limit:
        events, clock = events + size, clock + 1
    return events, clock


def plan_batches(
    count: int, clock: int, batch_size: int, warmup: bool, may_start, flush: bool, origin: int = 0
):
    """Sizes of the mini-batches to cut now from ``count`` buffered examples, the first one
    number ``clock``: full ones while ``may_start(clock)`` allows, and a partial last one
    when ``flush``. The warm-up counts from clock ``origin`` (a drift action restarts it).

    >>> [batch_size_at(c, 4) for c in (10, 11, 12)]
    [3, 3, 4]
    >>> plan_batches(9, 10, 4, True, lambda c: True, flush=False)
    [3, 3]
    >>> plan_batches(9, 10, 4, True, lambda c: True, flush=True)
    [3, 3, 3]
    >>> plan_batches(10, 20, 4, True, lambda c: c < 21, flush=True)
    [4]
    >>> plan_batches(9, 20, 4, True, lambda c: True, flush=False, origin=20)
    [1, 1, 1, 1, 1, 1, 2]
    """
    sizes, left = [], count
    while left > 0:
        size = batch_size_at(clock - origin, batch_size, warmup)
        if (left < size and not flush) or not may_start(clock):
            break
        sizes.append(min(size, left))
        left -= sizes[-1]
        clock += 1
    return sizes


def split_by_shard(idx: np.ndarray, g: np.ndarray, dim: int, shards: int) -> list:
    """Split sorted ``(idx, g)`` into one ``(shard, idx, g)`` per shard, empty ones included
    (an empty push still advances that shard's clock for the worker)."""
    cuts = np.searchsorted(idx, np.arange(1, shards) * shard_width(dim, shards))
    if g.ndim == 2:  # a standardized push: every part keeps the mini-batch's last row
        return [
            (s, part_idx, np.vstack((part_g, g[-1:])))
            for s, (part_idx, part_g) in enumerate(
                zip(np.split(idx, cuts), np.split(g[:-1], cuts), strict=True)
            )
        ]
    return [
        (s, part_idx, part_g)
        for s, (part_idx, part_g) in enumerate(
            zip(np.split(idx, cuts), np.split(g, cuts), strict=True)
        )
    ]


@dataclass(frozen=True)
class Consistency:
    """``async`` (never wait), ``bounded:TAU`` (bounded delay) or ``sync`` (BSP), plus flow
    control in every mode: at most ``max_in_flight`` of a worker's mini-batches not yet
    applied by every shard (``None``: no limit).

    Examples
    --------
    >>> Consistency.parse("bounded:2").may_start(clock=5, applied=[2, 3])
    True
    >>> Consistency.parse("bounded:2").may_start(clock=5, applied=[1, 3])
    False
    >>> Consistency.parse("async", max_in_flight=3).may_start(clock=5, applied=[1, 3])
    False
    """

    mode: str
    tau: int = 0
    max_in_flight: int | None = None

    @classmethod
    def parse(cls, text: str, max_in_flight: int | None = None) -> Consistency:
        if text in ("async", "sync"):
            return cls(text, 0, max_in_flight)
        if text.startswith("bounded:") and text[8:].isdigit():
            return cls("bounded", int(text[8:]), max_in_flight)
        raise ConfigError(
            f"consistency must be async, sync or bounded:TAU (TAU >= 0), got {text!r}"
        )

    def may_start(self, clock: int, applied: list[int]) -> bool:
        """May a worker start mini-batch ``clock`` (0-based) given, per shard, the last of its
        own clocks that shard has applied (-1 for none)?"""
        done = min(applied, default=clock - 1)  # every shard has applied my clocks up to here
        if self.max_in_flight is not None and clock - (done + 1) >= self.max_in_flight:
            return False
        if self.mode == "async":
            return True
        tau = 0 if self.mode == "sync" else self.tau
        return done >= clock - tau - 1

    def __str__(self) -> str:
        return f"bounded:{self.tau}" if self.mode == "bounded" else self.mode


DEFAULT_MAX_TASKS = 8  # each costs dense copies in every worker and shard (~57 MiB at 2^20)


@dataclass
class TaskGate:
    """Which tasks a job trains: those in ``allowed`` (None: any), at most ``max_tasks`` of
    them, admitted in the order they arrive. Every task costs dense working copies in every
    worker and shard, so a stream that invents task names must not be able to add them.

    Examples
    --------
    >>> gate = TaskGate(max_tasks=1)
    >>> gate.refuse("ctr") is None, gate.refuse("ctr") is None
    (True, True)
    >>> gate.refuse("fraud")
    "task 'fraud' refused: --max-tasks 1 already admitted ctr"
    >>> TaskGate(allowed=frozenset({"ctr"})).refuse("x")
    "task 'x' refused: not in --tasks ctr"
    """

    allowed: frozenset | None = None
    max_tasks: int = DEFAULT_MAX_TASKS
    admitted: set = field(default_factory=set)

    @classmethod
    def of(cls, tasks, max_tasks: int) -> TaskGate:
        """The gate of ``--tasks`` (a sequence of names, or None: any) and ``--max-tasks``."""
        return cls(frozenset(tasks) if tasks is not None else None, max_tasks)

    def refuse(self, task: str) -> str | None:
        """None if ``task`` is admitted (now or before), else the reason it is refused."""
        if task in self.admitted:
            return None
        if self.allowed is not None and task not in self.allowed:
            return f"task {task!r} refused: not in --tasks {','.join(sorted(self.allowed))}"
        if len(self.admitted) >= self.max_tasks:
            shown = ",".join(sorted(self.admitted)[:5]) + ("..." if self.max_tasks > 5 else "")
            return f"task {task!r} refused: --max-tasks {self.max_tasks} already admitted {shown}"
        self.admitted.add(task)
        return None


def state_digest(arrays: dict, fields: dict) -> str:
    """SHA-256 of an operator's logical state: named numpy arrays (by bytes, dtype and shape)
    and plain fields (canonical JSON; sets become sorted lists, dict keys strings).

    How it is stored (blocks, journal length) is left out, so a state rebuilt from a
    savepoint in another process, at another parallelism, hashes the same.

    Examples
    --------
    >>> a = state_digest({"w": np.arange(3.0)}, {"clock": {"t#0": 2}, "seen": {3, 1}})
    >>> a == state_digest({"w": np.arange(3.0)}, {"seen": {1, 3}, "clock": {"t#0": 2}})
    True
    >>> a == state_digest({"w": np.arange(3.0) + 1e-12}, {"clock": {"t#0": 2}, "seen": {1, 3}})
    False
    """

    def plain(value):
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (set, frozenset)):
            return sorted(plain(v) for v in value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, np.ndarray):
            return state_digest({"a": value}, {})
        if isinstance(value, np.generic):
            return value.item()
        return value

    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    h.update(json.dumps(plain(fields), sort_keys=True).encode())
    return h.hexdigest()
