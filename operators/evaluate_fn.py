"""The evaluator of the training job: prequential metrics per task, and the counters, as
JSON records for the ``metrics`` topic. The metrics themselves are ``operators/evaluation.py``;
this adapter keeps them in keyed state like the shards keep their blocks."""

from __future__ import annotations

import pickle
import time

from pyflink.datastream import KeyedProcessFunction

from operators.evaluation import Prequential, json_record
from operators.heap import freeze_startup_heap
from operators.journal import Journaled, Working
from operators.keyed import LONG, list_state, value_state
from operators.ps import timer_lapsed
from operators.ps_fn import arm_timer
from operators.records import Count

# keyed state, per task or counter name: a counter's total, or a task's pickled Prequential
# as of its last compaction; the mini-batches of predictions added since (the journal); the
# meta dict ("stamp": batches added, "journal": see operators.journal.Journaled); when the
# pending emission's timer fires (None: no emission pending)
EVALUATOR, JOURNAL, META, EMIT_AT = "evaluator", "evaluator-journal", "evaluator-meta", "emit-at"


class EvaluatorFunction(KeyedProcessFunction):
    """Prequential metrics per task (and counters), emitted as JSON to ``metrics``.

    A task's ``Prequential`` (a 1 MB score histogram and the open window's predictions) is
    kept like the shards' blocks (``operators/journal.py``): a working copy in memory, a
    journal entry per mini-batch of predictions in keyed state, and the whole object written
    every ``compact_every`` entries. Pickling it whole on every mini-batch took a third of
    the job's Python time in thread mode.
    """

    def __init__(self, window: int, run_id: str, emit_every_ms: int = 1000, on_drift="alert"):
        self.window = window
        self.on_drift = on_drift
        self.run_id = run_id
        self.emit_every_ms = emit_every_ms

    def open(self, runtime_context):
        self.state = value_state(runtime_context, EVALUATOR)
        self.meta = value_state(runtime_context, META)
        self.emit_at = value_state(runtime_context, EMIT_AT, LONG)
        self.journaled = Journaled(
            list_state(runtime_context, JOURNAL),
            build=self._compacted,
            replay=lambda ev, entry: ev.add(*entry),  # windows it closes were emitted before
            save=self._save,
            compact_every=64,
        )
        freeze_startup_heap()

    def _prequential(self, task: str, meta: dict) -> Working:
        return self.journaled.working(task, meta)

    def _compacted(self, task: str, meta: dict) -> Prequential:
        packed = self.state.value()
        return pickle.loads(packed) if packed else Prequential(task, self.window, self.on_drift)

    def _save(self, work: Working, meta: dict) -> None:
        # as bytes: process mode's state cache would keep (and later commit) the object
        # itself, which goes on changing
        self.state.update(pickle.dumps(work.copy))

    def process_element(self, record, ctx):
        if isinstance(record, Count):
            self.state.update((self.state.value() or 0) + record.n)
        else:
            task, labels, scores = record.task, record.labels, record.scores
            version, staleness = record.version, record.staleness
            meta = self.meta.value() or {}
            work = self._prequential(task, meta)
            entry = (labels, scores, version, staleness, time.time(), record.drift, record.pushed)
            for window in work.copy.add(*entry):
                yield json_record({**window, "run": self.run_id, "time": int(time.time() * 1000)})
            self.journaled.took(work, meta, entry)
            self.meta.update(meta)
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
