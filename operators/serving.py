"""What a predictor knows of one task's model, as pure logic (no pyflink import).

A predictor follows the ``model-updates`` stream of one training run. Updates carry absolute
weights and a per-shard version, so a replayed or duplicated update (the feedback edge is
at-least-once) is recognised by its version and skipped. When several runs share the topic,
the predictor follows the newest: it switches to another run only when that run's update is
newer (by its ``ts``) than everything it has applied, and then starts again from its initial
model (the snapshot it was started from, or zeros) — the same start a run warm-started from
that snapshot has.

Examples
--------
>>> follow = Following.start()
>>> follow.decide(run="r1", shard=0, version=1, ts=10)
'switch'
>>> follow.applied("r1", shard=0, version=1, ts=10)
>>> follow.decide(run="r1", shard=0, version=1, ts=10)   # a duplicate
'skip'
>>> follow.decide(run="r0", shard=0, version=9, ts=5)    # an older run
'skip'
>>> follow.model_version
1
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

FUTURE_SLACK_MS = 5 * 60 * 1000  # clocks of producers and of this job may differ by this much


@dataclass
class Following:
    """Which run a predictor follows and how far; picklable, kept in Flink state."""

    run: str | None = None
    since_ms: int = 0
    shard_versions: dict = field(default_factory=dict)
    base_version: int = 0
    pinned: str | None = None
    offsets: dict = field(default_factory=dict)  # standardized: each shard's latest centring
    # shard -> the version of the first update applied since the start or the switch, where
    # it was not the next after what the model held: the topic no longer reaches back that
    # far, and the coordinates only the missing updates wrote are absent (zeros)
    gaps: dict = field(default_factory=dict)
    updated: set = field(default_factory=set)  # shards updated since the start or the switch

    def __setstate__(self, state: dict) -> None:  # state written before a field existed
        self.__dict__.update({"gaps": {}, "updated": set(), **state})

    @classmethod
    def start(cls, pinned: str | None = None, snapshot=None) -> Following:
        """Before any update: from nothing, or from a snapshot (its run, versions and time)."""
        if snapshot is None:
            return cls(pinned=pinned)
        return cls(
            run=snapshot.run,
            since_ms=snapshot.as_of_ms,
            shard_versions=dict(snapshot.shard_versions),
            base_version=0 if snapshot.shard_versions else snapshot.version,
            pinned=pinned,
            offsets=dict(snapshot.offsets),
        )

    @property
    def has_model(self) -> bool:
        return self.run is not None or self.base_version > 0

    @property
    def margin_offset(self) -> float:
        """What the centring adds to every margin: minus the shards' offsets."""
        return -sum(self.offsets.values())

    @property
    def model_version(self) -> int:
        return self.base_version + sum(self.shard_versions.values())

    def decide(self, run: str, shard: int, version: int, ts: int,
               now_ms: int | None = None) -> str:  # fmt: skip
        """``"apply"`` (next update of the followed run), ``"skip"`` (duplicate, older or
        another run) or ``"switch"`` (a newer run: reset to the initial model, then apply).

        A run whose update is stamped more than ``FUTURE_SLACK_MS`` after ``now_ms`` is never
        switched to: one far-future ``ts`` would otherwise pin the predictor to that run.

        >>> f = Following.start()
        >>> f.decide("r1", 0, 1, ts=1_000, now_ms=1_000)
        'switch'
        >>> f.applied("r1", 0, 1, 1_000)
        >>> f.decide("evil", 0, 1, ts=10**13, now_ms=2_000)
        'skip'
        """
        if self.pinned is not None and run != self.pinned:
            return "skip"
        if run == self.run:
            return "apply" if version > self.shard_versions.get(shard, 0) else "skip"
        if self.pinned is None and now_ms is not None and ts > now_ms + FUTURE_SLACK_MS:
            return "skip"
        if self.pinned is not None or not self.has_model or ts > self.since_ms:
            return "switch"
        return "skip"

    def switched(self, run: str) -> None:
        self.run = run
        self.shard_versions = {}
        self.base_version = 0
        self.offsets = {}
        self.gaps = {}
        self.updated = set()

    def applied(self, run: str, shard: int, version: int, ts: int,
                offset: float | None = None) -> None:  # fmt: skip
        """``version`` of ``shard`` is in the model now; the first update of a shard since
        the start is a gap unless it follows what the model held.

        >>> f = Following.start()
        >>> f.applied("r1", shard=0, version=1, ts=5)
        >>> f.applied("r1", shard=1, version=7, ts=5)   # versions 1-6 of shard 1 are gone
        >>> f.applied("r1", shard=1, version=9, ts=6)   # later: not the topic's head
        >>> f.gaps
        {1: 7}
        """
        if run != self.run:
            self.switched(run)
        if shard not in self.updated:
            self.updated.add(shard)
            if not self.base_version and version > self.shard_versions.get(shard, 0) + 1:
                self.gaps[shard] = version
        self.shard_versions[shard] = version
        if offset is not None:
            self.offsets[shard] = offset
        self.since_ms = max(self.since_ms, ts)


MAX_REQUEST_AGE_MS = 10 * 60 * 1000  # a request older than this is a replay, not a live one
MAX_WAIT_MS = 60 * 1000  # a request waits this long for a first model, then is dead-lettered


def request_latency(ts: int, now_ms: int, max_age_ms: int = MAX_REQUEST_AGE_MS,
                    future_ms: int = FUTURE_SLACK_MS) -> int | None:  # fmt: skip
    """Milliseconds from a request's ``ts`` to ``now_ms``; ``None`` when ``ts`` is more than
    ``max_age_ms`` in the past or ``future_ms`` in the future: a replayed topic or a
    producer's clock, not a latency (the prediction is still made).

    >>> request_latency(1_000, 1_012)
    12
    >>> request_latency(1_000, 1_000 + 400 * 86_400_000) is None   # a year-old request
    True
    >>> request_latency(10**13, 1_000) is None                      # stamped in the future
    True
    """
    latency = now_ms - ts
    if latency > max_age_ms or -latency > future_ms:
        return None
    return latency


@dataclass
class RequestBatch:
    """The requests of one serving key gathered in one window: ids, ``ts``, hashed features
    as CSR arrays, and each raw record (for a dead letter); picklable.

    >>> b = RequestBatch("ctr", "ctr#0", ["r1", "r2", "r3"], [5, 6, 7], np.array([0, 1, 1, 3]),
    ...                  np.array([4, 1, 2]), np.ones(3), [b"1", b"2", b"3"])
    >>> head, tail = b.split(2)
    >>> head.event_ids, tail.event_ids, tail.indptr.tolist(), tail.indices.tolist()
    (['r1', 'r2'], ['r3'], [0, 2], [1, 2])
    >>> RequestBatch.concat([head, tail]).indptr.tolist()
    [0, 1, 1, 3]
    """

    task: str
    key: str
    event_ids: list
    ts: list
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    raws: list
    parsed_at: int = 0  # ms, when tracing (``serve --trace``)

    def __len__(self) -> int:
        return len(self.event_ids)

    def split(self, n: int) -> tuple[RequestBatch, RequestBatch]:
        """The first ``n`` requests and the rest."""
        cut = int(self.indptr[n])
        head = RequestBatch(self.task, self.key, self.event_ids[:n], self.ts[:n],
                            self.indptr[: n + 1], self.indices[:cut], self.values[:cut],
                            self.raws[:n], self.parsed_at)  # fmt: skip
        tail = RequestBatch(self.task, self.key, self.event_ids[n:], self.ts[n:],
                            self.indptr[n:] - cut, self.indices[cut:], self.values[cut:],
                            self.raws[n:], self.parsed_at)  # fmt: skip
        return head, tail

    @staticmethod
    def concat(batches: list[RequestBatch]) -> RequestBatch:
        first = batches[0]
        sizes = [b.indptr[-1] for b in batches]
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        indptr = np.concatenate(
            [[0]] + [b.indptr[1:] + s for b, s in zip(batches, starts, strict=True)]
        )
        return RequestBatch(
            first.task, first.key,
            [e for b in batches for e in b.event_ids], [t for b in batches for t in b.ts],
            indptr.astype(np.int64), np.concatenate([b.indices for b in batches]),
            np.concatenate([b.values for b in batches]), [r for b in batches for r in b.raws],
            first.parsed_at,
        )  # fmt: skip


def prediction_records(batch: RequestBatch, scores, follow: Following, serve_run: str,
                       now_ms: int, max_age_ms: int = MAX_REQUEST_AGE_MS,
                       trace: dict | None = None) -> list[str]:  # fmt: skip
    """One JSON prediction per request: its score, the model (run and version) that made it,
    the model's age (``now_ms`` minus the newest update it holds) and the request's latency
    (``null`` when its ``ts`` is out of range, :func:`request_latency`).

    >>> f = Following(run="r1", since_ms=900, shard_versions={0: 4})
    >>> b = RequestBatch("ctr", "ctr#0", ["q1"], [990], np.array([0, 0]), np.array([], int),
    ...                  np.array([]), [b"{}"])
    >>> prediction_records(b, np.array([0.25]), f, "s1", now_ms=1_000)
    ['{"event_id":"q1","task":"ctr","score":0.25,"model_version":4,"model_run":"r1",\
"model_age_ms":100,"latency_ms":10,"served_at":1000,"serve_run":"s1"}']
    """
    head = f',"task":{json.dumps(batch.task)},"score":'
    age = now_ms - follow.since_ms if follow.since_ms else None
    mid = (
        f',"model_version":{follow.model_version},"model_run":{json.dumps(follow.run)},'
        f'"model_age_ms":{json.dumps(age)},"latency_ms":'
    )
    tail = f',"served_at":{now_ms},"serve_run":{json.dumps(serve_run)}'
    if follow.gaps:  # the model lacks the updates before these versions (topic retention)
        gaps = {str(s): v for s, v in sorted(follow.gaps.items())}
        tail += f',"model_gaps":{json.dumps(gaps, separators=(",", ":"))}'
    tail += f',"trace":{json.dumps(trace, separators=(",", ":"))}}}' if trace else "}"
    return [
        f'{{"event_id":{json.dumps(event_id)}{head}{score!r}{mid}'
        f"{json.dumps(request_latency(ts, now_ms, max_age_ms))}{tail}"
        for event_id, ts, score in zip(batch.event_ids, batch.ts, scores.tolist(), strict=True)
    ]


def expire_waiting(held: list, now_ms: int, max_wait_ms: int) -> tuple[list, list]:
    """Of the request batches waiting for a model, ``(held at ms, batch)`` in arrival order:
    the batches that have waited ``max_wait_ms`` or more (to the dead letters), and the
    entries of the rest.

    >>> expire_waiting([(1_000, "b1"), (4_000, "b2")], now_ms=61_000, max_wait_ms=60_000)
    (['b1'], [(4000, 'b2')])
    >>> expire_waiting([(1_000, "b1")], now_ms=60_999, max_wait_ms=60_000)
    ([], [(1000, 'b1')])
    """
    expired = [batch for at, batch in held if now_ms - at >= max_wait_ms]
    kept = [(at, batch) for at, batch in held if now_ms - at < max_wait_ms]
    return expired, kept
