"""The Python heap of a job's operators and the cyclic garbage collector.

A full (generation 2) collection walks every object the interpreter holds. A serve job's
interpreter holds about 190,000 at start-up (PyFlink, Beam, numpy, the job's modules), and in
thread mode every Python operator of a TaskManager shares it: each full collection paused all
of them for 96-122 ms, a spike in the serving latency's p99 once every 20 s or so
(docs/decisions/0013-freeze-the-start-up-heap.md). Objects alive when an operator opens live
as long as the job, so each operator moves them out of the collector's reach when it opens;
reference counting still frees any of them that are let go.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Move every object alive now to the collector's permanent generation (``gc.freeze``):
    later full collections walk only what the job allocates from here on. Returns how many
    objects are frozen in all.

    >>> freeze_startup_heap() > 0
    True
    >>> gc.unfreeze()  # (this doctest's own process)
    """
    gc.freeze()
    return gc.get_freeze_count()
