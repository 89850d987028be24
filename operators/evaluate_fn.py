"""The evaluator of the training job: prequential metrics per task, and the counters, as
JSON records for the ``metrics`` topic. The metrics themselves are ``operators/evaluation.py``;
this adapter keeps them in keyed state like the shards keep their blocks."""

from __future__ import annotations

import pickle
import time

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from operators.evaluation import Prequential, json_record
from operators.heap import freeze_startup_heap
from operators.journal import Working, WorkingCopies
from operators.ps import timer_lapsed
from operators.ps_fn import PICKLED, arm_timer
from operators.records import Count


class EvaluatorFunction(KeyedProcessFunction):
    """Prequential metrics per task (and counters), emitted as JSON to ``metrics``.

    A task's ``Prequential`` (a 1 MB score histogram and the open window's predictions) is
    kept like the shards' blocks (``operators/journal.py``): a working copy in memory, a
    journal entry per mini-batch of predictions in keyed state, and the whole object written
    every ``compact_every`` entries. Pickling it whole on every mini-batch took a third of
    the job's Python time in thread mode.
    """

    def __init__(self, window: int, run_id: str, emit_every_ms: int = 1000):
        self.window = window
        self.run_id = run_id
        self.emit_every_ms = emit_every_ms

    def open(self, runtime_context):
        # a counter's total, or a task's pickled Prequential as of its last compaction
        self.state = runtime_context.get_state(ValueStateDescriptor("evaluator", PICKLED))
        # a task's (batches added, journal entries) since the start
        self.meta = runtime_context.get_state(ValueStateDescriptor("evaluator-meta", PICKLED))
        self.journal = runtime_context.get_list_state(
            ListStateDescriptor("evaluator-journal", PICKLED)
        )
        # when the pending emission's timer fires (None: no emission pending)
        self.emit_at = runtime_context.get_state(ValueStateDescriptor("emit-at", Types.LONG()))
        self.copies = WorkingCopies(compact_every=64)
        freeze_startup_heap()

    def _prequential(self, task: str, meta: tuple) -> Working:
        added, journaled = meta
        return self.copies.get(
            task,
            added,
            lambda: self._compacted(task),
            lambda: list(self.journal.get() or []) if journaled else [],
            lambda ev, entry: ev.add(*entry),  # windows it closes were emitted before
        )

    def _compacted(self, task: str) -> Prequential:
        packed = self.state.value()
        return pickle.loads(packed) if packed else Prequential(task, self.window)

    def process_element(self, record, ctx):
        if isinstance(record, Count):
            self.state.update((self.state.value() or 0) + record.n)
        else:
            task, labels, scores = record.task, record.labels, record.scores
            version, staleness = record.version, record.staleness
            added, journaled = self.meta.value() or (0, 0)
            work = self._prequential(task, (added, journaled))
            entry = (labels, scores, version, staleness, time.time())
            for window in work.copy.add(*entry):
                yield json_record({**window, "run": self.run_id, "time": int(time.time() * 1000)})
            added, journaled = added + 1, journaled + 1
            if journaled >= self.copies.compact_every:
                # as bytes: process mode's state cache would keep (and later commit) the
                # object itself, which goes on changing
                self.state.update(pickle.dumps(work.copy))
                self.journal.clear()
                journaled = 0
            else:
                self.journal.add(entry)
            work.stamp = added
            self.meta.update((added, journaled))
        now = ctx.timer_service().current_processing_time()
        if timer_lapsed(self.emit_at.value(), now, self.emit_every_ms):
            arm_timer(ctx, self.emit_at, now + self.emit_every_ms)

    def on_timer(self, timestamp, ctx):
        self.emit_at.clear()
        meta = self.meta.value()
        if meta is not None:
            doc = self._prequential(ctx.get_current_key(), meta).copy.cumulative()
        else:
            name = ctx.get_current_key()
            doc = {"type": "counter", "name": name, "count": int(self.state.value() or 0)}
        doc["time"] = int(time.time() * 1000)
        doc["run"] = self.run_id
        yield json_record(doc)
