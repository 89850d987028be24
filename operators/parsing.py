"""The one parse path of every job: raw records to events and dead letters, then events to
the hashed columns a worker learns from or a replica scores.

``train``'s parser, ``serve``'s request parser, ``validate`` and the local engine all call
``parse_batch``; the two that learn or score then call ``by_worker``. Records in a columnar
format (``connectors/columns.py``, ``connectors/arrow_records.py``) go through
``parse_columns`` and ``columns_by_worker`` instead, which never make an object per event.
Pure: no Flink here, the adapters only hand on what it returns (``Rejected.letter`` makes the
dead-letter record).

Examples
--------
>>> from operators.ps import TaskGate
>>> raws = [b'{"event_id": "e1", "ts": 5, "label": 1, "task": "ctr", "features": {"os": "ios"}}',
...         b'{"event_id": 7}',
...         b'{"event_id": "e3", "ts": 6, "label": 0, "task": "b", "features": {"x": 2}}']
>>> parsed = parse_batch(raws, [(0, n, None) for n in range(3)], TaskGate.of(("ctr",), 1))
>>> [e.event_id for e in parsed.events], [(r.where[1], r.step) for r in parsed.rejected]
(['e1'], [(1, 'decode'), (2, 'admit')])
>>> [(key, ex.task, ex.event_ids) for key, ex, _ in by_worker(parsed.events, 2, bits=10)]
[('ctr#1', 'ctr', ['e1'])]
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import orjson

from connectors.columns import decode_columns, encode_columns
from connectors.deadletter import dead_letter
from connectors.events import Event, decode_events
from connectors.hashing import clip_values, hash_batch, hash_columns
from operators.examples import Examples


def worker_of(event_id: str, workers: int) -> int:
    """The worker (or serving replica) of an event: a stable hash of its id."""
    return zlib.crc32(event_id.encode()) % workers


class Rejected(NamedTuple):
    """A raw record that did not become an event: why, where from (``(partition, offset,
    index in its record)``, as the caller gave it) and at which step (``decode``: it does not
    decode; ``admit``: its task is not taken)."""

    raw: bytes | None
    reason: str
    where: tuple
    step: str

    def letter(self, topic: str, run: str | None = None) -> str:
        """The dead-letter record of it (``connectors.deadletter``)."""
        partition, offset, index = self.where
        return dead_letter(self.raw, self.reason, topic, partition, offset, self.step, run=run,
                           index=index)  # fmt: skip


class Parsed(NamedTuple):
    events: list  # the events taken, in input order
    raws: list  # the raw record of each
    rejected: list  # Rejected, in input order


def parse_batch(raws: list, where: list, gate=None, require_label: bool = True) -> Parsed:
    """Decode ``raws`` (one event each; ``where[i]`` says where ``raws[i]`` came from) and
    admit their tasks through ``gate`` (``operators.ps.TaskGate``; None: every task)."""
    events, kept, rejected, refusals = [], [], [], {}
    for raw, at, event in zip(raws, where, decode_events(raws, require_label), strict=True):
        if type(event) is not Event:
            rejected.append(Rejected(raw, event.reason, at, "decode"))
            continue
        if gate is not None:
            if event.task not in refusals:  # a task's admission, once per batch
                refusals[event.task] = gate.refuse(event.task)
            if refusals[event.task]:
                rejected.append(Rejected(raw, refusals[event.task], at, "admit"))
                continue
        events.append(event)
        kept.append(raw)
    return Parsed(events, kept, rejected)


def record_decoder(form: str):
    """The decoder of records in columnar format ``form``: ``columns`` (JSON,
    ``connectors.columns``) or ``arrow`` (``connectors.arrow_records``, imported when asked
    for: pyarrow takes a while to import)."""
    if form == "arrow":
        from connectors.arrow_records import decode_arrow

        return decode_arrow
    return decode_columns


def record_encoder(form: str):
    """The encoder of records in columnar format ``form`` (``record_decoder``'s formats):
    a list of event dicts in, one record's bytes out."""
    if form == "arrow":
        from connectors.arrow_records import encode_arrow

        return encode_arrow
    return encode_columns


def parse_columns(raw: bytes | None, where: tuple, gate=None, require_label: bool = True,
                  decode=decode_columns):  # fmt: skip
    """A columnar record (``decode``: ``record_decoder``'s) from ``where`` (``(partition,
    offset)``): its events that decode and whose task ``gate`` admits, as ``Columns``, and a
    ``Rejected`` for each of the others, with its index in the record (None: the record)."""
    cols, bad = decode(raw, require_label)
    partition, offset = where
    rejected = [Rejected(b.payload, b.reason, (partition, offset, b.index), "decode")
                for b in bad]  # fmt: skip
    if gate is not None and len(cols):
        refusals = {task: gate.refuse(task) for task in dict.fromkeys(cols.tasks)}
        if any(refusals.values()):
            refused = [i for i, task in enumerate(cols.tasks) if refusals[task]]
            rejected += [Rejected(orjson.dumps(cols.event(i)), refusals[cols.tasks[i]],
                                  (partition, offset, cols.positions[i]), "admit")
                         for i in refused]  # fmt: skip
            cols = cols.without(refused)
    return cols, rejected


def columns_by_worker(cols, workers: int, bits: int, clip: float | None = None):
    """``by_worker`` for events as ``Columns``: hashed in one call, column by column."""
    if not len(cols):
        return []
    groups = _worker_groups(cols.tasks, cols.event_ids, workers)
    indptr, indices, values = hash_columns(cols.features, len(cols), bits)
    order = np.concatenate(list(groups.values()))
    indptr, indices, values = _rows(indptr, indices, values, order)
    labels = np.array([label or 0 for label in cols.labels], np.int8)[order]
    event_ids = list(map(cols.event_ids.__getitem__, order.tolist()))
    every = Examples("", event_ids, labels, indptr, indices, clip_values(values, clip))
    return _split(every, groups, cols.tasks)


def _worker_groups(tasks: list, event_ids: list, workers: int) -> dict[str, np.ndarray]:
    """The events' positions (int64 arrays) by worker key (``task#worker``, the worker
    ``worker_of`` the event's id), keys in order of first appearance."""
    n = len(event_ids)
    of = np.fromiter(map(zlib.crc32, map(str.encode, event_ids)), np.int64, n) % workers
    if len(set(tasks)) == 1:  # the common case, one task: a pass per worker
        firsts = np.sort(np.unique(of, return_index=True)[1])
        return {f"{tasks[0]}#{of[i]}": np.flatnonzero(of == of[i]) for i in firsts}
    groups: dict[str, list] = {}
    for position, (task, worker) in enumerate(zip(tasks, of.tolist(), strict=True)):
        groups.setdefault(f"{task}#{worker}", []).append(position)
    return {key: np.array(group, np.int64) for key, group in groups.items()}


def _rows(indptr, indices, values, order):
    """The CSR rows ``order`` of a matrix, in that order."""
    lengths = np.diff(indptr)[order]
    out = np.zeros(len(order) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    take = np.repeat(indptr[:-1][order] - out[:-1], lengths) + np.arange(out[-1])
    return out, indices[take], values[take]


def _split(every: Examples, groups: dict, tasks) -> list:
    """``every`` (the groups' rows one group after the other) cut into one Examples per
    group: ``(key, Examples, positions)``."""
    out, start = [], 0
    for key, group in groups.items():
        stop = start + len(group)
        out.append((key, replace(every.rows(start, stop), task=tasks[group[0]]), group))
        start = stop
    return out


def by_worker(events: list, workers: int, bits: int, clip: float | None = None):
    """The events grouped by worker key (``task#worker``), hashed in one call (clipped to
    ``clip``): ``(key, Examples, positions)`` per key in order of first appearance, the
    positions being the group's indices in ``events``."""
    if not events:
        return []
    tasks = [event.task for event in events]
    positions = _worker_groups(tasks, [event.event_id for event in events], workers)
    groups = {key: group.tolist() for key, group in positions.items()}  # callers index lists
    order = [position for group in groups.values() for position in group]
    ordered = [events[position] for position in order]
    indptr, indices, values = hash_batch([event.features for event in ordered], bits)
    labels = np.fromiter((event.label or 0 for event in ordered), np.int8, len(ordered))
    every = Examples("", [event.event_id for event in ordered], labels, indptr, indices,
                     clip_values(values, clip))  # fmt: skip
    return _split(every, groups, tasks)
