"""The parameter server loop's decisions, as pure functions of plain values.

The Flink operators (``operators/worker_fn.py``, ``shard_fn.py``) read keyed state, call
these, and write state back; what a worker or a shard *decides* is here, where a unit test
can reach it in microseconds. The mini-batch plan (``plan_batches``), the consistency models
(``Consistency.may_start``) and the batch timeout (``timer_lapsed``) are in
``operators/ps.py``.
"""

from __future__ import annotations

from typing import Literal, TypeVar

Push = TypeVar("Push")


# ---- the worker -------------------------------------------------------------------------


def must_train(buffered: int, batch_size: int, flush: bool) -> bool:
    """Whether a worker holding ``buffered`` examples trains now: a whole mini-batch is
    there, or a partial one must go (``flush``: its batch timeout fired, or a sync shard
    awaits it).

    >>> must_train(999, 1000, False), must_train(1000, 1000, False), must_train(1, 1000, True)
    (False, True, True)
    >>> must_train(0, 1000, True)
    False
    """
    return buffered > 0 and (buffered >= batch_size or flush)


def state_pieces(count: int, size: int) -> list[tuple[int, int]]:
    """How a worker stores ``count`` examples it cannot train yet: as ``(start, stop)``
    slices of at most ``size`` examples, one keyed-state entry (one pickle) each.

    A mini-batch that takes part of an entry writes the entry's rest back, so the entry's
    size bounds what one mini-batch pickles again; a gathered chunk can hold tens of
    thousands of examples (records of many events), far more than one mini-batch.

    >>> state_pieces(1000, 256)
    [(0, 256), (256, 512), (512, 768), (768, 1000)]
    >>> state_pieces(3, 256), state_pieces(0, 256)
    ([(0, 3)], [])
    """
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def staleness(clock: int, applied: list[int]) -> int:
    """How many of a worker's own mini-batches the model that scores mini-batch ``clock``
    lacks: those before ``clock`` that some shard has not applied yet (``applied``: per shard,
    the last of the worker's clocks it has applied, -1 for none), as far as the worker has
    heard back.

    >>> staleness(clock=10, applied=[9, 9, 9])  # every shard has everything before 10
    0
    >>> staleness(clock=10, applied=[9, 6, 8])  # clocks 7, 8 and 9 missing on one shard
    3
    >>> staleness(clock=0, applied=[-1, -1])
    0
    """
    return clock - (min(applied) + 1)


def from_rolled_back_timeline(reflected: int, clock: int) -> bool:
    """Whether a model update must be ignored because it reflects a push this worker has not
    made on its present timeline: ``reflected`` is the last of the worker's clocks the update
    has applied, ``clock`` the worker's next clock.

    After a restore the worker's clock goes back to its checkpoint, but the feedback topic is
    not rolled back: an update a failed attempt wrote after that checkpoint can reflect
    clocks the worker will train again. Taking it would score the re-trained examples with
    weights that have already learned their labels; the shard sends its update again once it
    has applied the re-made push.

    >>> from_rolled_back_timeline(reflected=4, clock=5)  # it has applied my push 4 of 0-4
    False
    >>> from_rolled_back_timeline(reflected=5, clock=5)  # push 5 is not made yet
    True
    >>> from_rolled_back_timeline(reflected=-1, clock=0)  # an update of no push of mine
    False
    """
    return reflected >= clock


def answer_to_wait(clock: int, waiting: int, buffered: int) -> Literal["train", "empty"] | None:
    """What a worker does when a sync shard says it awaits this worker's push of clock
    ``waiting``: nothing if the worker is past it (or not there yet), else train what is
    buffered, partial or not (``"train"``), or, with nothing buffered, push an empty
    mini-batch for that clock (``"empty"``) so the barrier can open.

    >>> answer_to_wait(clock=3, waiting=3, buffered=10), answer_to_wait(3, 3, 0)
    ('train', 'empty')
    >>> answer_to_wait(clock=4, waiting=3, buffered=10) is None  # already pushed
    True
    """
    if clock != waiting:
        return None
    return "train" if buffered else "empty"


# ---- the shard --------------------------------------------------------------------------


def duplicate_push(clock: int, last_applied: int) -> bool:
    """Whether a worker's push of ``clock`` was applied already (``last_applied``: the last
    of its clocks this shard applied, -1 for none). A restored job re-sends pushes made
    after its checkpoint; each is applied once and never twice.

    >>> duplicate_push(3, 3), duplicate_push(4, 3), duplicate_push(0, -1)
    (True, False, False)
    """
    return clock <= last_applied


def open_barrier(
    held: dict[int, dict[str, Push]], next_clock: int, workers: int
) -> tuple[list[tuple[int, dict[str, Push]]], dict[int, dict[str, Push]], int]:
    """The sync barrier of a shard: the rounds it may apply now, in clock order, with what it
    still holds and its next clock. A round (one clock) opens when every one of ``workers``
    has pushed it; ``held`` maps a clock to each worker's push of it. ``held`` is not
    changed.

    >>> ready, held, nxt = open_barrier({0: {"a": 1, "b": 2}, 1: {"a": 3}}, 0, workers=2)
    >>> ready, held, nxt
    ([(0, {'a': 1, 'b': 2})], {1: {'a': 3}}, 1)
    >>> open_barrier({1: {"a": 3}}, 0, workers=2)[0]  # clock 0 not pushed by all: wait
    []
    """
    rest, ready = dict(held), []
    while len(rest.get(next_clock, ())) >= workers:
        ready.append((next_clock, rest.pop(next_clock)))
        next_clock += 1
    return ready, rest, next_clock


def awaited_clock(held: dict, next_clock: int, announced: int | None) -> int | None:
    """The clock a sync shard announces it awaits (the workers that have not pushed it then
    push what they have, or an empty mini-batch), or None: nothing is held for
    ``next_clock``, or that clock was ``announced`` already (once per clock is enough).

    >>> awaited_clock({2: {"a": 1}}, 2, announced=None), awaited_clock({2: {"a": 1}}, 2, 2)
    (2, None)
    >>> awaited_clock({3: {"a": 1}}, 2, None) is None  # nobody is at clock 2 yet
    True
    """
    if held.get(next_clock) and announced != next_clock:
        return next_clock
    return None
