"""The parameter server's shard as a PyFlink adapter: it applies the workers' pushes to its
range of the model with the update rule (``operators/shard_server.py``), holds them at the
sync barrier (``operators/loop.py``) and emits the model updates (``ps_fn.py`` has the
records it exchanges).
"""

from __future__ import annotations

import time

import numpy as np
from pyflink.datastream import KeyedProcessFunction

from connectors.messages import ModelUpdate
from operators.dense_range import DenseRange
from operators.evaluation import REJECTED_COUNT
from operators.faults import FailOnce
from operators.heap import freeze_startup_heap
from operators.journal import Journaled, Working
from operators.keyed import COUNTS, list_state, map_state, value_state, with_key
from operators.loop import (
    awaited_clock,
    duplicate_push,
    open_barrier,
)
from operators.ps import shard_width, state_digest
from operators.ps_fn import (
    Digests,
    MapView,
    PsSettings,
    initial_models,
    load_blocks,
    save_blocks,
)
from operators.records import Count
from operators.shard_server import ShardServer

# keyed state, per task/shard: the optimizer state's blocks as of the last compaction, the
# pushes applied since (the journal), the meta dict (_new_meta), sync mode's held pushes
BLOCKS, JOURNAL, META, HELD = "blocks", "push-journal", "meta", "held"


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
            self.s.model.make_optimizer(),
            self.s.loop.update_threshold,
            self.s.loop.block,
            state_updates=self.s.loop.rmw,
        )
        self.blocks = map_state(runtime_context, BLOCKS)
        self.meta = value_state(runtime_context, META)
        self.held = value_state(runtime_context, HELD)
        # the dense working copy of the blocks' state, see operators/journal.py
        self.journaled = Journaled(
            list_state(runtime_context, JOURNAL),
            build=self._build,
            replay=self.server.replay,
            save=save_blocks(self.blocks),
        )
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
        skip = ("blocks", "journal", "stamp", "waited")  # bookkeeping, not the model's state
        fields = {k: v for k, v in meta.items() if k not in skip}
        fields["held"] = self.held.value() or {}
        arrays = self._work(meta, task, int(shard)).copy.arrays
        return state_digest(arrays, fields), {"version": meta["version"]}

    def _meta(self, task: str, shard: int) -> dict:
        meta = self.meta.value()
        if meta is None:
            meta = _new_meta()
            if task in self.init:  # warm start: this shard's range of the snapshot
                width = shard_width(self.s.model.dim, self.s.loop.shards)
                blocks = MapView(self.blocks, meta["blocks"])
                self.server.warm(
                    blocks, self.init[task].weights, shard * width, (shard + 1) * width
                )
        return meta

    def process_element(self, push, ctx):
        return self.digests.around(ctx, self._digest, self._push(push))

    def _push(self, push):
        task, shard, worker, clock, idx, g, drift = push
        self.fault.tick()
        meta = self._meta(task, shard)
        if duplicate_push(clock, meta["clock"].get(worker, -1)):
            meta["duplicates_skipped"] += 1  # already applied once: never twice
            self.meta.update(meta)
            return
        if drift > meta.get("drift", 0):  # a drift no worker told this shard of before
            meta["drift"] = drift
            yield self._act(meta, task, shard)
        if self.s.loop.consistency == "sync":
            yield from self._hold(meta, task, shard, worker, clock, idx, g)
        else:
            yield from self._apply(meta, task, shard, [(worker, clock)], idx, g)
        self.meta.update(meta)

    def _hold(self, meta, task, shard, worker, clock, idx, g):
        held = self.held.value() or {}
        held.setdefault(clock, {})[worker] = (idx, g)
        ready, held, meta["next_clock"] = open_barrier(
            held, meta["next_clock"], self.s.loop.workers
        )
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
        return self.journaled.working(f"{task}/{shard}", meta)

    def _build(self, key: str, meta: dict) -> DenseRange:
        """The working copy of shard ``key`` (``task/shard``) from its compacted blocks."""
        shard = int(key.rsplit("/", 1)[1])
        width = shard_width(self.s.model.dim, self.s.loop.shards)
        names = (*self.server.optimizer.state_names, "sent")
        dr = DenseRange(names, shard * width, (shard + 1) * width, self.s.loop.block)
        return self.server.load_offset(load_blocks(dr, self.blocks, meta["blocks"]))

    def _apply(self, meta, task, shard, pushes, idx, g):
        work = self._work(meta, task, shard)
        rows = meta.get("rows", 0)
        if g.ndim == 2:  # standardized: the running row count goes in the push's last row
            g = g.copy()
            rows = g[-1, 0] = rows + g[-1, 0]
        result, state, entry = self.server.apply_dense(work.copy, idx, g), None, None
        if result is None:  # rejected: nothing changed, nothing to replay
            meta["rejected"] += 1
            result = (np.zeros(0, np.int64), np.zeros(0))
            yield COUNTS, with_key(Count(REJECTED_COUNT, 1))
        else:
            if self.s.loop.rmw:  # the workers' read-my-writes needs the state, not only weights
                local = result[0] - work.copy.lo
                state = {k: work.copy.arrays[k][local] for k in self.server.optimizer.state_names}
            entry = (idx, g)
            meta["rows"] = int(rows)
        meta["version"] += 1
        self.journaled.took(work, meta, entry)
        for worker, clock in pushes:
            meta["clock"][worker] = clock
            meta["pushes_applied"] += 1
        offset = work.copy.offset if self.s.model.standardize else None
        yield self._update(
            meta, task, shard, result, [[w, c] for w, c in pushes], state=state, offset=offset
        )

    def _act(self, meta, task, shard) -> bytes:
        """``--on-drift reset|boost`` on the whole range, once per drift (whichever worker
        detects it first); the update carries every coordinate the shard holds."""
        work = self._work(meta, task, shard)
        action = self.s.model.on_drift
        changed = self.server.act_dense(work.copy, action)
        state = None
        if self.s.loop.rmw:
            local = changed[0] - work.copy.lo
            state = {k: work.copy.arrays[k][local] for k in self.server.optimizer.state_names}
        if action == "reset":
            meta["rows"] = 0
        meta["version"] += 1
        self.journaled.took(work, meta, (action,))
        offset = work.copy.offset if self.s.model.standardize else None
        return self._update(meta, task, shard, changed, [], state=state, offset=offset)

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
            bits=self.s.model.bits,
        ).to_bytes()
