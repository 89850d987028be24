"""The parameter server's shard as a PyFlink adapter: it applies the workers' pushes to its
range of the model with the update rule (``operators/shard_server.py``), holds them at the
sync barrier (``operators/loop.py``) and emits the model updates (``ps_fn.py`` has the
records it exchanges).
"""

from __future__ import annotations

import time

import numpy as np
from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction
from pyflink.datastream.state import (
    ListStateDescriptor,
    MapStateDescriptor,
    ValueStateDescriptor,
)

from connectors.messages import ModelUpdate
from operators.dense_range import DenseRange
from operators.evaluation import REJECTED_COUNT
from operators.faults import FailOnce
from operators.heap import freeze_startup_heap
from operators.journal import Working, WorkingCopies
from operators.loop import (
    awaited_clock,
    duplicate_push,
    open_barrier,
)
from operators.ps import shard_width, state_digest
from operators.ps_fn import (
    COUNTS,
    PICKLED,
    Digests,
    MapView,
    PsSettings,
    compact,
    initial_models,
    load_blocks,
)
from operators.records import Count
from operators.shard_server import ShardServer


def _new_meta() -> dict:
    return {
        "version": 0,
        "clock": {},  # worker -> last clock applied (pushes arrive in clock order per worker)
        "rejected": 0,
        "next_clock": 0,  # sync mode: the clock applied next
        "pushes_applied": 0,
        "duplicates_skipped": 0,
        "blocks": set(),
    }


class ShardFunction(KeyedProcessFunction):
    """A parameter-server shard, keyed by ``task/shard``: applies pushes with the update
    rule, keeps its version and vector clock, emits the new absolute weights.

    ``sync`` mode holds pushes in state until every worker's push for a clock is in, then
    applies their sum once, clock by clock.
    """

    def __init__(self, s: PsSettings):
        self.s = s

    def open(self, runtime_context):
        self.server = ShardServer(
            self.s.make_optimizer(),
            self.s.update_threshold,
            self.s.block,
            state_updates=self.s.rmw,
        )
        self.blocks = runtime_context.get_map_state(
            MapStateDescriptor("blocks", Types.LONG(), PICKLED)
        )
        self.meta = runtime_context.get_state(ValueStateDescriptor("meta", PICKLED))
        self.held = runtime_context.get_state(ValueStateDescriptor("held", PICKLED))
        self.journal = runtime_context.get_list_state(ListStateDescriptor("push-journal", PICKLED))
        self.copies = WorkingCopies()  # a cache of the blocks' state, see operators/journal.py
        self.init = initial_models(self.s)
        self.fault = FailOnce(self.s.fail_marker, self.s.checkpoint_dir)
        self.digests = Digests(self.s, "shard")
        freeze_startup_heap()

    def _digest(self, key: str) -> tuple:
        """The digest of this shard's optimizer state, version, clocks, counters and held
        (sync) pushes."""
        meta = self.meta.value()
        if meta is None:
            return state_digest({}, {}), {"version": 0}
        task, shard = key.rsplit("/", 1)
        fields = {k: v for k, v in meta.items() if k not in ("blocks", "journal", "waited")}
        fields["held"] = self.held.value() or {}
        arrays = self._work(meta, task, int(shard)).copy.arrays
        return state_digest(arrays, fields), {"version": meta["version"]}

    def _meta(self, task: str, shard: int) -> dict:
        meta = self.meta.value()
        if meta is None:
            meta = _new_meta()
            if task in self.init:  # warm start: this shard's range of the snapshot
                width = shard_width(self.s.dim, self.s.shards)
                blocks = MapView(self.blocks, meta["blocks"])
                self.server.warm(
                    blocks, self.init[task].weights, shard * width, (shard + 1) * width
                )
        return meta

    def process_element(self, push, ctx):
        return self.digests.around(ctx, self._digest, self._push(push))

    def _push(self, push):
        task, shard, worker, clock, idx, g = push
        self.fault.tick()
        meta = self._meta(task, shard)
        if duplicate_push(clock, meta["clock"].get(worker, -1)):
            meta["duplicates_skipped"] += 1  # already applied once: never twice
            self.meta.update(meta)
            return
        if self.s.consistency == "sync":
            yield from self._hold(meta, task, shard, worker, clock, idx, g)
        else:
            yield from self._apply(meta, task, shard, [(worker, clock)], idx, g)
        self.meta.update(meta)

    def _hold(self, meta, task, shard, worker, clock, idx, g):
        held = self.held.value() or {}
        held.setdefault(clock, {})[worker] = (idx, g)
        ready, held, meta["next_clock"] = open_barrier(held, meta["next_clock"], self.s.workers)
        for round_clock, round_pushes in ready:
            workers = sorted(round_pushes)
            uniq, summed = self.server.optimizer.combine([round_pushes[w] for w in workers])
            pushes = [(w, round_clock) for w in workers]
            yield from self._apply(meta, task, shard, pushes, uniq, summed)
        self.held.update(held)
        awaited = awaited_clock(held, meta["next_clock"], meta.get("waited"))
        if awaited is not None:
            meta["waited"] = awaited  # say once per clock who is awaited
            empty = (np.zeros(0, np.int64), np.zeros(0))
            yield self._update(meta, task, shard, empty, [], waiting=awaited)

    def _work(self, meta, task, shard) -> Working:
        """The shard's dense working copy (rebuilt from blocks + journal when stale)."""
        width = shard_width(self.s.dim, self.s.shards)
        names = (*self.server.optimizer.state_names, "sent")
        return self.copies.get(
            f"{task}/{shard}",
            meta["version"],
            lambda: self.server.load_offset(
                load_blocks(
                    DenseRange(names, shard * width, (shard + 1) * width, self.s.block),
                    self.blocks,
                    meta["blocks"],
                )
            ),
            lambda: list(self.journal.get() or []) if meta.get("journal") else [],
            lambda dr, entry: self.server.apply_dense(dr, *entry),
        )

    def _apply(self, meta, task, shard, pushes, idx, g):
        work = self._work(meta, task, shard)
        rows = meta.get("rows", 0)
        if g.ndim == 2:  # standardized: the running row count goes in the push's last row
            g = g.copy()
            rows = g[-1, 0] = rows + g[-1, 0]
        result, state = self.server.apply_dense(work.copy, idx, g), None
        if result is None:
            meta["rejected"] += 1
            result = (np.zeros(0, np.int64), np.zeros(0))
            yield COUNTS, Count(REJECTED_COUNT, 1)
        else:
            if self.s.rmw:  # the workers' read-my-writes needs the state, not only weights
                local = result[0] - work.copy.lo
                state = {k: work.copy.arrays[k][local] for k in self.server.optimizer.state_names}
            self.journal.add((idx, g))
            meta["journal"] = meta.get("journal", 0) + 1
            meta["rows"] = int(rows)
        meta["version"] += 1
        work.stamp = meta["version"]
        if meta.get("journal", 0) >= self.copies.compact_every:
            compact(work, self.blocks, self.journal, meta)
        for worker, clock in pushes:
            meta["clock"][worker] = clock
            meta["pushes_applied"] += 1
        offset = work.copy.offset if self.s.standardize else None
        yield self._update(
            meta, task, shard, result, [[w, c] for w, c in pushes], state=state, offset=offset
        )

    def _update(
        self, meta, task, shard, changed, applied, waiting=None, state=None, offset=None
    ) -> bytes:
        """The model-update record of this shard's state: its version, vector clock and
        counters, with the ``changed`` (indices, absolute values) and, for read-my-writes,
        the optimizer ``state`` at those indices."""
        return ModelUpdate(
            run=self.s.run_id,
            task=task,
            shard=shard,
            version=meta["version"],
            clock=dict(meta["clock"]),
            indices=changed[0],
            values=changed[1],
            applied=applied,
            rejected=meta["rejected"],
            ts=int(time.time() * 1000),
            pushes_applied=meta["pushes_applied"],
            duplicates_skipped=meta["duplicates_skipped"],
            waiting=waiting,
            state=state,
            offset=offset,
            rows=meta.get("rows", 0) if offset is not None else None,
            bits=self.s.bits,
        ).to_bytes()
