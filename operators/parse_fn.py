"""The training job's parser: a gathered batch of raw events in, one chunk of hashed
examples per worker key out, every bad record to the dead letters with its reason."""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np
from pyflink.datastream import ProcessFunction

from connectors.deadletter import dead_letter
from connectors.events import Event, decode_events, split_record
from connectors.hashing import clip_values, hash_batch
from operators.evaluation import DEAD_LETTER_COUNT
from operators.examples import Examples
from operators.heap import freeze_startup_heap
from operators.keyed import COUNTS, DEAD_LETTERS
from operators.ps_fn import PsSettings
from operators.records import Count, WorkerExamples


def worker_of(event_id: str, workers: int) -> int:
    return zlib.crc32(event_id.encode()) % workers


class ParseFunction(ProcessFunction):
    """Decode, validate and hash a batch of raw events ``Row(task, lines, partitions,
    offsets)`` (gathered by ``connectors.ingest``); emit one chunk of examples per worker key;
    bad lines to ``DEAD_LETTERS`` with their partition and offset."""

    def __init__(self, s: PsSettings):
        self.s = s
        self.gate = None

    def open(self, runtime_context) -> None:
        # the tasks admitted so far, in this subtask; after a restart admission starts again
        # from the checkpoint's offsets (docs/architecture.md, "Tasks")
        self.gate = self.s.loop.task_gate()
        freeze_startup_heap()

    def process_element(self, value, ctx):
        raws, where = [], []
        for line, partition, offset in zip(value[1], value[2], value[3], strict=True):
            for index, raw in split_record(line, self.s.topics.ndjson):
                raws.append(raw)
                where.append((partition, offset, index))
        topic, events, refusals = self.s.topics.input, [], {}
        decoded = decode_events(raws)
        for raw, (partition, offset, index), event in zip(raws, where, decoded, strict=True):
            if type(event) is not Event:
                yield DEAD_LETTERS, dead_letter(raw, event.reason, topic, partition, offset,
                                                index=index)  # fmt: skip
                continue
            if event.task not in refusals:  # a task's admission, once per batch
                refusals[event.task] = self.gate.refuse(event.task)
            refused = refusals[event.task]
            if refused:
                letter = dead_letter(raw, refused, topic, partition, offset, "admit", index=index)
                yield DEAD_LETTERS, letter
            else:
                events.append(event)
        if len(events) < len(raws):
            yield COUNTS, Count(DEAD_LETTER_COUNT, len(raws) - len(events))
        yield from self._chunks(events)

    def _chunks(self, events: list):
        """The events grouped by worker key (task and worker), hashed in one call; each
        key's share leaves as one Examples (columns: one small pickle into the worker and its
        state)."""
        if not events:
            return
        groups: dict[str, list] = {}
        for event in events:
            key = f"{event.task}#{worker_of(event.event_id, self.s.loop.workers)}"
            groups.setdefault(key, []).append(event)
        ordered = [event for group in groups.values() for event in group]
        indptr, indices, values = hash_batch(
            [event.features for event in ordered], self.s.model.bits
        )
        labels = np.fromiter((event.label for event in ordered), np.int8, len(ordered))
        every = Examples("", [event.event_id for event in ordered], labels, indptr, indices,
                         clip_values(values, self.s.model.clip))  # fmt: skip
        start = 0
        for key, group in groups.items():
            task, stop = group[0].task, start + len(group)
            yield WorkerExamples(task, key, replace(every.rows(start, stop), task=task))
            start = stop
