"""A working copy of keyed state in memory, made durable as compacted blocks plus a journal.

Reading and writing blocks through PyFlink's state channel on every push, and looping over
blocks in Python, cost more than the learning itself. So the shards and the workers keep, per
key, a dense working copy (``operators.dense_range.DenseRange``) and write to Flink state only

- a journal entry per operation (one small ``ListState`` append: a push, or an update), and
- every ``compact_every`` entries, the blocks touched since the last compaction, after which
  the journal is cleared.

Flink state (blocks + journal + a stamp that counts operations) always holds everything, so a
checkpoint is complete; the working copy is a cache of it. Whenever the cache's stamp differs
from the state's (a new operator instance after a restart, or a restore to an older
checkpoint), the copy is rebuilt from the blocks by replaying the journal. Operations must be
deterministic for that: pushes are replayed through the same update rule, updates by
assignment.

Examples
--------
>>> import numpy as np
>>> from operators.dense_range import DenseRange
>>> state, journal, cache = {}, [], WorkingCopies(compact_every=2)
>>> def build():
...     dr = DenseRange(("w",), 0, 8, block=4)
...     for bid, value in state.items():
...         dr.load(bid, value)
...     return dr
>>> entries = [(np.array([1]), np.array([0.5])), (np.array([6]), np.array([2.0]))]
>>> for stamp, entry in enumerate(entries):
...     work = cache.get("k", stamp, build, lambda: list(journal), lambda dr, e: dr.assign(*e))
...     work.copy.assign(*entry)
...     journal.append(entry)
...     work.stamp = stamp + 1
...     if len(journal) >= cache.compact_every:
...         state.update(work.copy.take_touched()); journal.clear()
>>> sorted(state), state[1]  # block 1 holds one weight: stored sparse
([0, 1], (array([2], dtype=int32), array([2.])))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# a working copy not asked for in this long is dropped (a task that went quiet: its dense
# arrays are megabytes per key); the next record of its key rebuilds it from state
IDLE_EVICT_S = 600.0


@dataclass
class Working:
    stamp: int
    copy: object


class WorkingCopies:
    """Per key, the working copy and the stamp of the state it reflects; copies idle for
    ``idle_s`` are dropped (looked for at most every ``idle_s / 2``)."""

    def __init__(self, compact_every: int = 512, idle_s: float = IDLE_EVICT_S,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.compact_every = compact_every
        self.idle_s, self._clock = idle_s, clock
        self._work: dict = {}
        self._used: dict = {}  # key -> when its copy was last asked for
        self._swept = clock()

    def __contains__(self, key) -> bool:
        return key in self._work

    def evict_idle(self, now: float) -> None:
        """Drop the copies not asked for in the last ``idle_s`` seconds."""
        for key in [k for k, used in self._used.items() if now - used > self.idle_s]:
            del self._work[key], self._used[key]
        self._swept = now

    def get(
        self,
        key,
        stamp: int,
        build: Callable[[], object],
        read_journal: Callable[[], Iterable],
        replay: Callable[[object, object], object],
    ) -> Working:
        """The working copy of ``key``, rebuilt (``build()`` from the compacted blocks, then
        ``replay`` of every journal entry) unless the cached one is at ``stamp``."""
        now = self._clock()
        if now - self._swept >= self.idle_s / 2:
            self.evict_idle(now)
        self._used[key] = now
        work = self._work.get(key)
        if work is None or work.stamp != stamp:
            copy = build()
            for entry in read_journal():
                replay(copy, entry)  # what the journal touched stays dirty until compacted
            work = Working(stamp, copy)
            self._work[key] = work
        return work

    def current(self, key) -> Working:
        """The working copy last returned by ``get`` for ``key``."""
        return self._work[key]


class Journaled:
    """The one place a key's working copy is kept durable: apply, journal, bump, compact.

    Each operator that keeps a working copy (shard, worker replica, evaluator, serve replica)
    hands this its journal (a ``ListState``: ``add``, ``get``, ``clear``) and three functions:
    ``build(key, meta)`` makes the copy from the state as of the last compaction, ``replay(copy,
    entry)`` re-applies one journal entry, ``save(work, meta)`` writes the compacted state.
    The key's ``meta`` dict (kept by the operator in its own value state, beside its other
    fields) holds ``stamp``, the operations taken, and ``journal``, the entries since the
    last compaction.

    Examples
    --------
    >>> saved, journal = [], []
    >>> class Entries(list):  # what a ListState does, here
    ...     add, clear = list.append, list.clear
    ...     def get(self): return list(self)
    >>> j = Journaled(Entries(), build=lambda key, meta: list(saved), replay=list.append,
    ...               save=lambda work, meta: saved.__init__(work.copy), compact_every=2)
    >>> meta = {}
    >>> for x in (1, 2, 3):
    ...     work = j.working("k", meta)
    ...     work.copy.append(x)
    ...     j.took(work, meta, x)
    >>> saved, j.journal.get(), meta  # compacted after two entries; 3 only in the journal
    ([1, 2], [3], {'journal': 1, 'stamp': 3})
    >>> Journaled(j.journal, lambda k, m: list(saved), list.append, None).working("k", meta).copy
    [1, 2, 3]
    """

    def __init__(self, journal, build: Callable, replay: Callable, save: Callable,
                 compact_every: int = 512, idle_s: float = IDLE_EVICT_S):  # fmt: skip
        self.journal = journal
        self.copies = WorkingCopies(compact_every, idle_s)
        self._build, self._replay, self._save = build, replay, save

    def working(self, key, meta: dict) -> Working:
        """The working copy of ``key`` as of ``meta`` (rebuilt when its stamp is not the
        cached copy's: after a restart, a restore, or an eviction)."""
        return self.copies.get(
            key,
            meta.get("stamp", 0),
            lambda: self._build(key, meta),
            lambda: list(self.journal.get() or []) if meta.get("journal") else [],
            self._replay,
        )

    def took(self, work: Working, meta: dict, entry=None) -> None:
        """``work.copy`` has taken one operation: journal ``entry`` (None: nothing to replay,
        say a push the update rule rejected), bump the stamp, compact when the journal is
        long."""
        if entry is not None:
            self.journal.add(entry)
            meta["journal"] = meta.get("journal", 0) + 1
        meta["stamp"] = work.stamp = meta.get("stamp", 0) + 1
        if meta.get("journal", 0) >= self.copies.compact_every:
            self.compact(work, meta)

    def compact(self, work: Working, meta: dict) -> None:
        """Save the working copy's state, then clear the journal."""
        self._save(work, meta)
        self.journal.clear()
        meta["journal"] = 0

    def restart(self, meta: dict) -> None:
        """Forget the journal and move the stamp on: the next ``working`` builds afresh from
        what the caller has just put in state."""
        self.journal.clear()
        meta["journal"] = 0
        meta["stamp"] = meta.get("stamp", 0) + 1
