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

from dataclasses import dataclass, field

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

    def applied(self, run: str, shard: int, version: int, ts: int,
                offset: float | None = None) -> None:  # fmt: skip
        if run != self.run:
            self.switched(run)
        self.shard_versions[shard] = version
        if offset is not None:
            self.offsets[shard] = offset
        self.since_ms = max(self.since_ms, ts)
