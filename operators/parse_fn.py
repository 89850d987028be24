"""The training job's parser: a gathered batch of raw events in, one chunk of hashed
examples per worker key out, every bad record to the dead letters with its reason."""

from __future__ import annotations

from pyflink.datastream import ProcessFunction

from connectors.events import split_record
from operators.evaluation import DEAD_LETTER_COUNT
from operators.heap import freeze_startup_heap
from operators.keyed import COUNTS, DEAD_LETTERS, with_key
from operators.parsing import (
    by_worker,
    columns_by_worker,
    parse_batch,
    parse_columns,
    record_decoder,
)
from operators.ps_fn import PsSettings
from operators.records import Count, WorkerExamples


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
        if self.s.topics.columnar:
            yield from self._columns(value)
            return
        raws, where = [], []
        for line, partition, offset in zip(value[1], value[2], value[3], strict=True):
            for index, raw in split_record(line, self.s.topics.ndjson):
                raws.append(raw)
                where.append((partition, offset, index))
        parsed = parse_batch(raws, where, self.gate)
        for rejected in parsed.rejected:
            yield DEAD_LETTERS, rejected.letter(self.s.topics.input)
        if parsed.rejected:
            yield COUNTS, with_key(Count(DEAD_LETTER_COUNT, len(parsed.rejected)))
        # each worker key's share as one Examples (columns: one small pickle into the worker
        # and its state), hashed in one call
        model = self.s.model
        for key, examples, _ in by_worker(parsed.events, self.s.loop.workers, model.bits,
                                          model.clip):  # fmt: skip
            yield with_key(WorkerExamples(examples.task, key, examples))

    def _columns(self, value):
        """The same for records in a columnar format, one record at a time."""
        model, topic = self.s.model, self.s.topics.input
        decode = record_decoder(self.s.topics.input_format)
        for line, partition, offset in zip(value[1], value[2], value[3], strict=True):
            cols, rejected = parse_columns(line, (partition, offset), self.gate, decode=decode)
            for letter in rejected:
                yield DEAD_LETTERS, letter.letter(topic)
            if rejected:
                yield COUNTS, with_key(Count(DEAD_LETTER_COUNT, len(rejected)))
            for key, examples, _ in columns_by_worker(cols, self.s.loop.workers, model.bits,
                                                      model.clip):  # fmt: skip
                yield with_key(WorkerExamples(examples.task, key, examples))
