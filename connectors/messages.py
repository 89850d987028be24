"""Model-update messages on the ``model-updates`` topic (JSON, one per applied push).

An update carries absolute values, never deltas, so a replayed or duplicated update is
harmless::

    {"run": "r-1a2b", "task": "ctr", "shard": 2, "version": 17,
     "clock": {"ctr#0": 16, "ctr#1": 15}, "applied": [["ctr#0", 16]], "rejected": 0,
     "indices": [524301, 524377], "values": [0.0132, -0.271], "ts": 1763800000123}

``clock`` is the shard's vector clock: per worker, the last of its mini-batches applied.
``applied`` lists the (worker, clock) pushes this update applied; ``pushes_applied`` counts
every push the shard's state has applied so far and ``duplicates_skipped`` the pushes it
refused as already applied (the exactly-once tests read both). ``waiting`` (sync mode only)
says the shard holds some workers' pushes of that clock and waits for the others: a worker
with nothing buffered at that clock answers with an empty push, so a bounded stream whose
workers ran out of examples at different clocks still finishes. ``state`` (with
read-my-writes, the default outside sync mode) carries the optimizer's state arrays at
``indices`` too (FTRL: ``{"z": [...], "n": [...]}``), so a worker can apply its own pushes
that are still in flight on top of them, with the shards' own update rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from connectors.errors import DecodeError


@dataclass(frozen=True)
class ModelUpdate:
    run: str
    task: str
    shard: int
    version: int
    clock: dict[str, int]
    indices: np.ndarray = field(repr=False)
    values: np.ndarray = field(repr=False)
    applied: list = field(default_factory=list)
    rejected: int = 0
    ts: int = 0
    pushes_applied: int = 0
    duplicates_skipped: int = 0
    waiting: int | None = None  # sync: the shard holds some workers' pushes of this clock
    state: dict | None = field(default=None, repr=False)  # read-my-writes: optimizer state

    def to_json(self) -> str:
        return json.dumps(
            {
                "run": self.run,
                "task": self.task,
                "shard": self.shard,
                "version": self.version,
                "clock": self.clock,
                "applied": self.applied,
                "rejected": self.rejected,
                "indices": self.indices.tolist(),
                "values": self.values.tolist(),
                "ts": self.ts,
                "pushes_applied": self.pushes_applied,
                "duplicates_skipped": self.duplicates_skipped,
                **({"waiting": self.waiting} if self.waiting is not None else {}),
                **(
                    {"state": {k: v.tolist() for k, v in self.state.items()}}
                    if self.state is not None
                    else {}
                ),
            },
            separators=(",", ":"),
        )


def decode_update(raw: str | bytes) -> ModelUpdate:
    try:
        doc = json.loads(raw)
        return ModelUpdate(
            run=doc["run"],
            task=doc["task"],
            shard=int(doc["shard"]),
            version=int(doc["version"]),
            clock={str(k): int(v) for k, v in doc["clock"].items()},
            indices=np.asarray(doc["indices"], np.int64),
            values=np.asarray(doc["values"], np.float64),
            applied=doc.get("applied", []),
            rejected=int(doc.get("rejected", 0)),
            ts=int(doc.get("ts", 0)),
            pushes_applied=int(doc.get("pushes_applied", 0)),
            duplicates_skipped=int(doc.get("duplicates_skipped", 0)),
            waiting=int(doc["waiting"]) if doc.get("waiting") is not None else None,
            state={str(k): np.asarray(v, np.float64) for k, v in doc["state"].items()}
            if doc.get("state") is not None
            else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DecodeError(f"bad model update: {type(exc).__name__}: {exc}") from exc
