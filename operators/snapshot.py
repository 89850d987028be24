"""Versioned model snapshots: ``weights.npz`` (plain numeric arrays) + ``manifest.json``.

A snapshot directory holds nothing that needs pickle; loading checks the format version and
the SHA-256 of every file listed in the manifest, and refuses anything else with one line.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from connectors.errors import StreamshardError
from operators.logistic import dimension
from operators.replica import Replica

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.npz"
MANIFEST_FILE = "manifest.json"


class SnapshotError(StreamshardError):
    """A snapshot cannot be written or loaded; the message says why."""


@dataclass(frozen=True)
class Snapshot:
    task: str
    bits: int
    version: int
    weights: np.ndarray = field(repr=False)
    clock: dict = field(default_factory=dict)
    run: str | None = None
    model: str = "logistic"
    shard_versions: dict = field(default_factory=dict)
    as_of_ms: int = 0  # the newest update the weights include (wall ms); creation if none
    # standardized runs: each shard's centring as of the snapshot, already folded into the
    # intercept of ``weights`` (a plain linear model); a predictor following the run's
    # updates unfolds it, since updates carry the intercept unfolded
    offsets: dict = field(default_factory=dict)
    # shard -> the version of its oldest update read, where the updates before it were no
    # longer on the topic (``from_updates``); not saved
    gaps: dict = field(default_factory=dict)

    def unfolded(self) -> np.ndarray:
        """``weights`` as the run's model updates hold them: the centring not in the
        intercept (the margin subtracts ``sum(offsets)``)."""
        w = np.array(self.weights, dtype=np.float64)
        w[-1] += sum(self.offsets.values())
        return w


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inside(root: str | Path, name: str) -> Path:
    """``root/name``, refused unless ``name`` is one plain folder name (a task comes from the
    stream: no separator, no ``..``, no absolute path) and no symlink leads it elsewhere.

    >>> inside("/tmp/snaps", "ctr-v3").name
    'ctr-v3'
    >>> inside("/tmp/snaps", "../escaped-v3")
    Traceback (most recent call last):
    ...
    operators.snapshot.SnapshotError: snapshot folder name '../escaped-v3' is not a plain name
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise SnapshotError(f"snapshot folder name {name!r} is not a plain name")
    base = Path(root)
    out = base / name
    if out.is_symlink() or not out.resolve().is_relative_to(base.resolve()):
        raise SnapshotError(f"snapshot folder {out} leads outside {base}")
    return out


def save(snapshot: Snapshot, root: str | Path) -> Path:
    """Write ``root/<task>-v<version>/``; return that directory."""
    if snapshot.weights.shape != (dimension(snapshot.bits),):
        raise SnapshotError(
            f"weights must have 2**bits + 1 = {dimension(snapshot.bits)} entries, "
            f"got {snapshot.weights.shape}"
        )
    out = inside(root, f"{snapshot.task}-v{snapshot.version}")
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / WEIGHTS_FILE, weights=np.asarray(snapshot.weights, dtype=np.float64))
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": snapshot.model,
        "task": snapshot.task,
        "version": snapshot.version,
        "clock": snapshot.clock,
        "shard_versions": {str(k): v for k, v in snapshot.shard_versions.items()},
        "offsets": {str(k): float(v) for k, v in snapshot.offsets.items()},
        "run": snapshot.run,
        "hash_bits": snapshot.bits,
        "hashing": {
            "like": "sklearn.feature_extraction.FeatureHasher",
            "n_features": 1 << snapshot.bits,
            "input_type": "dict",
            "alternate_sign": True,
            "intercept_index": 1 << snapshot.bits,
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "as_of_ms": snapshot.as_of_ms or int(time.time() * 1000),
        "files": {WEIGHTS_FILE: _sha256(out / WEIGHTS_FILE)},
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return out


def load(directory: str | Path) -> Snapshot:
    """Load and verify a snapshot directory."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
    except FileNotFoundError as exc:
        raise SnapshotError(f"{directory}: missing {MANIFEST_FILE}") from exc
    except ValueError as exc:
        raise SnapshotError(f"{directory}: {MANIFEST_FILE} is not JSON: {exc}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SnapshotError(
            f"{directory}: unknown format version {manifest.get('format_version')!r} "
            f"(this streamshard reads {FORMAT_VERSION})"
        )
    for name, digest in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            raise SnapshotError(f"{directory}: missing file {name} listed in the manifest")
        if _sha256(path) != digest:
            raise SnapshotError(f"{directory}: checksum mismatch for {name}")
    if WEIGHTS_FILE not in manifest.get("files", {}):
        raise SnapshotError(f"{directory}: the manifest lists no {WEIGHTS_FILE}")
    try:
        with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as data:
            weights = np.array(data["weights"], dtype=np.float64)
    except (ValueError, KeyError, OSError) as exc:
        raise SnapshotError(
            f"{directory}: cannot read {WEIGHTS_FILE} without pickle: {exc}"
        ) from exc
    bits = int(manifest["hash_bits"])
    if not np.isfinite(weights).all():
        raise SnapshotError(f"{directory}: weights are not all finite")
    if weights.shape != (dimension(bits),):
        raise SnapshotError(f"{directory}: weights have shape {weights.shape}, not 2**{bits}+1")
    return Snapshot(
        task=manifest["task"],
        bits=bits,
        version=int(manifest["version"]),
        weights=weights,
        clock=manifest.get("clock", {}),
        run=manifest.get("run"),
        model=manifest.get("model", "logistic"),
        shard_versions={int(k): int(v) for k, v in manifest.get("shard_versions", {}).items()},
        as_of_ms=int(manifest.get("as_of_ms", 0)),
        offsets=_offsets(directory, manifest.get("offsets", {})),
    )


def _offsets(directory: Path, doc: object) -> dict:
    try:
        offsets = {int(k): float(v) for k, v in doc.items()}
    except (AttributeError, TypeError, ValueError) as exc:
        raise SnapshotError(f"{directory}: 'offsets' must map shards to numbers") from exc
    if not all(np.isfinite(list(offsets.values()))):
        raise SnapshotError(f"{directory}: 'offsets' are not all finite")
    return offsets


def from_updates(updates, bits: int, base: Snapshot | None = None) -> list[Snapshot]:
    """Materialize the latest weights of each task of the newest run from model updates
    (``ModelUpdate`` objects in topic order; absolute values, so the last one wins).

    With ``base``, a snapshot of one run's task, start from its weights and apply only that
    run's updates that are newer than it, shard by shard: the topic then needs to hold only
    its tail. A shard whose oldest update read is not the next after what the weights
    already hold (version 1 without a base) is listed in the snapshot's ``gaps``: the topic
    no longer reaches back far enough, and the coordinates only the missing updates wrote
    are absent."""
    updates = list(updates)
    if base is None and not updates:
        return []
    run = base.run if base is not None else updates[-1].run
    tasks: dict[str, _Rebuilt] = {}
    if base is not None:
        tasks[base.task] = _Rebuilt.of(base, bits)
    for update in updates:
        if update.run != run or (base is not None and update.task != base.task):
            continue
        held = base.shard_versions.get(update.shard, 0) if base is not None else 0
        if update.version <= held:
            continue  # already in the base's weights
        if update.indices.size and update.indices.max() >= dimension(bits):
            raise SnapshotError(
                f"update of task {update.task!r} has index {int(update.indices.max())}, "
                f"beyond 2**{bits}: pass the run's --hash-bits"
            )
        tasks.setdefault(update.task, _Rebuilt()).apply(update, held)
    return [rebuilt.snapshot(task, bits, run) for task, rebuilt in sorted(tasks.items())]


@dataclass
class _Rebuilt:
    """One task's model as its updates are read: the weights, each shard's version and
    clock, centring and gap, and the newest update's time."""

    replica: Replica = field(default_factory=Replica)
    shards: dict = field(default_factory=dict)  # shard -> (version, clock)
    offsets: dict = field(default_factory=dict)
    gaps: dict = field(default_factory=dict)
    as_of: int = 0
    read: set = field(default_factory=set)  # the shards of which an update was applied

    @classmethod
    def of(cls, base: Snapshot, bits: int) -> _Rebuilt:
        rebuilt = cls(shards={s: (v, base.clock.get(str(s), {}))
                              for s, v in base.shard_versions.items()},
                      offsets=dict(base.offsets), as_of=base.as_of_ms)  # fmt: skip
        rebuilt.replica.assign(np.arange(dimension(bits)), base.unfolded())
        return rebuilt

    def apply(self, update, held: int) -> None:
        """``update`` (newer than the ``held`` version of its shard) into the model."""
        if update.shard not in self.read and update.version > held + 1:
            self.gaps[update.shard] = update.version
        self.read.add(update.shard)
        self.replica.assign(update.indices, update.values)
        self.shards[update.shard] = (update.version, update.clock)
        if update.offset is not None:
            self.offsets[update.shard] = update.offset
        self.as_of = max(self.as_of, update.ts)

    def snapshot(self, task: str, bits: int, run: str | None) -> Snapshot:
        return Snapshot(
            task=task,
            bits=bits,
            version=sum(v for v, _ in self.shards.values()),
            weights=_folded(self.replica.dense(dimension(bits)), self.offsets),
            offsets=dict(sorted(self.offsets.items())),
            clock={str(s): c for s, (_, c) in sorted(self.shards.items())},
            run=run,
            shard_versions={s: v for s, (v, _) in sorted(self.shards.items())},
            as_of_ms=self.as_of,
            gaps=dict(sorted(self.gaps.items())),
        )


def gap_warning(snap: Snapshot, topic: str) -> str | None:
    """What to tell a user whose snapshot was built from a topic that lost its head.

    >>> gap_warning(Snapshot("ctr", 4, 9, np.zeros(17), run="r", gaps={1: 5}), "updates")
    "warning: topic 'updates' no longer holds run r's first updates of task ctr (shard 1 \
starts at version 5): coordinates only those updates wrote are missing. Start from an \
older snapshot (--init-model) or keep the topic's retention longer than a run."
    """
    return retention_warning(topic, snap.task, snap.gaps, snap.run) if snap.gaps else None


def retention_warning(topic: str, task: str, gaps: dict, run: str | None = None) -> str:
    """The warning for a model rebuilt from ``topic`` after it lost the first updates of
    ``task``: ``gaps`` maps a shard to the oldest version read (``snapshot``, and ``serve``'s
    ``model_gaps``).

    >>> retention_warning("updates", "b", {"0": 2})[:75]
    "warning: topic 'updates' no longer holds the first updates of task b (shard"
    """
    shards = ", ".join(f"shard {s} starts at version {v}" for s, v in gaps.items())
    whose = f"run {run}'s" if run is not None else "the"
    return (
        f"warning: topic {topic!r} no longer holds {whose} first updates of task {task} "
        f"({shards}): coordinates only those updates wrote are missing. Start from an older "
        "snapshot (--init-model) or keep the topic's retention longer than a run."
    )


def _folded(weights: np.ndarray, offsets: dict) -> np.ndarray:
    weights[-1] -= sum(offsets.values())
    return weights


def load_models(path: str | Path) -> dict[str, Snapshot]:
    """The models under ``path`` by task: one snapshot directory, or a folder of them (as
    ``snapshot --out`` writes); of several versions of a task, the highest wins."""
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        snap = load(path)
        return {snap.task: snap}
    if not path.is_dir():
        raise SnapshotError(f"{path}: no such snapshot directory")
    models: dict[str, Snapshot] = {}
    for sub in sorted(p for p in path.iterdir() if (p / MANIFEST_FILE).is_file()):
        snap = load(sub)
        if snap.task not in models or snap.version > models[snap.task].version:
            models[snap.task] = snap
    if not models:
        raise SnapshotError(f"{path}: holds no snapshot (no {MANIFEST_FILE} in it or below it)")
    return models


def from_topic(
    kafka, topic: str, bits: int, idle: float = 3.0, base: Snapshot | None = None
) -> list[Snapshot]:
    """The newest run's latest weights per task, read from a model-updates topic; with
    ``base``, that snapshot's run and task brought up to date (see :func:`from_updates`)."""
    from connectors.admin import read_records
    from connectors.errors import DecodeError
    from connectors.messages import decode_update

    updates = []
    for record in read_records(kafka, topic, idle=idle):
        try:
            updates.append(decode_update(record.value))
        except DecodeError:
            continue  # not a model update
    snapshots = from_updates(updates, bits, base)
    if not snapshots:
        raise SnapshotError(f"no model updates on topic {topic!r}")
    return snapshots
