"""The training job's parser: a gathered batch of raw events in, one chunk of hashed
examples per worker key out, every bad record to the dead letters with its reason."""

from __future__ import annotations

import zlib

from pyflink.datastream import ProcessFunction

from connectors.deadletter import dead_letter
from connectors.errors import DecodeError
from connectors.events import decode_event, split_record
from connectors.hashing import clip_values, hash_batch, pack_rows
from operators.evaluation import DEAD_LETTER_COUNT
from operators.ps_fn import COUNTS, DEAD_LETTERS, PsSettings


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
        self.gate = self.s.task_gate()

    def process_element(self, value, ctx):
        events, seen = [], 0
        topic = self.s.input_topic
        for line, partition, offset in zip(value[1], value[2], value[3], strict=True):
            for index, raw in split_record(line, self.s.ndjson):
                seen += 1
                try:
                    event = decode_event(raw)
                except DecodeError as exc:
                    letter = dead_letter(raw, exc.reason, topic, partition, offset, index=index)
                    yield DEAD_LETTERS, letter
                    continue
                refused = self.gate.refuse(event.task)
                if refused:
                    letter = dead_letter(raw, refused, topic, partition, offset, "admit",
                                         index=index)  # fmt: skip
                    yield DEAD_LETTERS, letter
                else:
                    events.append(event)
        if len(events) < seen:
            yield COUNTS, ("count", DEAD_LETTER_COUNT, seen - len(events))
        # the whole batch hashed in one call; each row as bytes: a tuple with two small numpy
        # arrays pickles 25x slower, and an example is pickled on its way into the worker and
        # into its state
        indptr, indices, values = hash_batch([event.features for event in events], self.s.bits)
        rows = pack_rows(indptr, indices, clip_values(values, self.s.clip))
        chunks: dict[str, list] = {}
        for event, row in zip(events, rows, strict=True):
            key = f"{event.task}#{worker_of(event.event_id, self.s.workers)}"
            chunks.setdefault(key, []).append(
                ("ex", event.task, key, event.event_id, event.label, event.ts, *row)
            )
        for key, chunk in chunks.items():
            yield ("exs", chunk[0][1], key, chunk)
