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
that are still in flight on top of them, with the shards' own update rule. ``offset``
(with standardization, the default) is the shard's share of the centring: a score's margin
is the weights times the raw values plus the intercept minus the sum of every shard's latest
``offset``.

The training job writes updates in a compact binary form (``to_bytes``): ``MAGIC``, the
header's length (uint32, little-endian), the header (the JSON above without the arrays, plus
``n`` and the ``state`` names in order), then the arrays raw: ``indices`` as int32,
``values`` and each state array as float64, all little-endian. An update of 300 coordinates
with read-my-writes and standardization state is about a third of its JSON and decodes in
microseconds instead of hundreds (``python benchmarks/codec_bench.py``). ``decode_update``
reads both forms; ``streamshard tail`` prints either as JSON.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import orjson

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
    offset: float | None = None  # standardized: the shard's centring (subtract from margins)
    rows: int | None = None  # standardized: the rows the shard has counted
    bits: int | None = None  # the run's hash bits (its model has 2**bits + 1 coordinates)

    def to_json(self) -> str:
        """JSON with orjson (numpy arrays written directly; ~8x faster than json + tolist).
        A shard only emits finite values: it rejects a push whose result is not finite."""
        doc = self._header()
        doc["indices"] = np.ascontiguousarray(self.indices, np.int64)
        doc["values"] = np.ascontiguousarray(self.values, np.float64)
        if self.state is not None:
            doc["state"] = {k: np.ascontiguousarray(v, np.float64) for k, v in self.state.items()}
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY).decode()

    def _header(self) -> dict:
        doc = {
            "run": self.run,
            "task": self.task,
            "shard": self.shard,
            "version": self.version,
            "clock": self.clock,
            "applied": self.applied,
            "rejected": self.rejected,
            "ts": self.ts,
            "pushes_applied": self.pushes_applied,
            "duplicates_skipped": self.duplicates_skipped,
        }
        for name in ("waiting", "bits", "rows"):
            if getattr(self, name) is not None:
                doc[name] = int(getattr(self, name))
        if self.offset is not None:
            doc["offset"] = float(self.offset)
        return doc

    def to_bytes(self) -> bytes:
        """The binary form (see the module's docstring): what the training job writes."""
        doc = self._header()
        doc["n"] = int(self.indices.size)
        arrays = [self.values, *(self.state or {}).values()]
        if self.state is not None:
            doc["state"] = list(self.state)
        parts = [np.ascontiguousarray(self.indices, "<i4")]
        parts += [np.ascontiguousarray(a, "<f8") for a in arrays]
        head = orjson.dumps(doc)
        return b"".join([MAGIC, struct.pack("<I", len(head)), head, *(p.tobytes() for p in parts)])


MAGIC = b"\x00SSU1"  # a JSON text never starts with NUL
MAX_INDEX = 2**31  # hash bits are at most 30: any index of a real model is below 2**30 + 1


def _int(doc: dict, name: str, default=None, low: int = 0) -> int:
    value = doc.get(name, default)
    if type(value) is not int or not low <= value < 2**53:
        raise DecodeError(f"bad model update: field {name!r} must be an integer >= {low}, "
                          f"got {value!r:.40}")  # fmt: skip
    return value


def _floats(values: object, size: int, name: str) -> np.ndarray:
    arr = np.asarray(values, np.float64) if isinstance(values, list) else None
    if arr is None or arr.shape != (size,) or not np.isfinite(arr).all():
        raise DecodeError(f"bad model update: {name!r} must be {size} finite numbers")
    return arr


def decode_update(raw: str | bytes, dim: int | None = None) -> ModelUpdate:
    """Decode and validate one update: types, ranges, lengths, finite values, and (given
    ``dim``) indices inside the model. Anything wrong raises ``DecodeError``, never another
    exception (an update comes off a shared topic: any writer could have sent it).

    >>> decode_update('{"run": "r", "task": "t", "shard": 0, "version": 1, "clock": {},'
    ...               ' "indices": [3], "values": [0.5]}', dim=4).values.tolist()
    [0.5]
    >>> decode_update('{"run": "r", "task": "t", "shard": 1e999, "version": 1}')
    Traceback (most recent call last):
    ...
    connectors.errors.DecodeError: bad model update: invalid JSON: number is infinity ...
    """
    try:
        return _decode_update(raw, dim)
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a record causes becomes a DecodeError
        raise DecodeError(f"bad model update: {type(exc).__name__}: {exc}"[:300]) from exc


def _decode_update(raw, dim):
    if raw is None:
        raise DecodeError("bad model update: null record")
    if isinstance(raw, (bytes, bytearray, memoryview)) and bytes(raw[: len(MAGIC)]) == MAGIC:
        doc, idx, values, state = _binary(bytes(raw))
    else:
        doc, idx, values, state = _json(raw)
    for name in ("run", "task"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise DecodeError(f"bad model update: field {name!r} must be a non-empty string")
    clock = doc.get("clock", {})
    if not isinstance(clock, dict) or not all(type(v) is int and v >= -1 for v in clock.values()):
        raise DecodeError("bad model update: 'clock' must map workers to integers >= -1")
    limit = MAX_INDEX if dim is None else dim
    if idx.size and (idx.min() < 0 or idx.max() >= limit):
        raise DecodeError(f"bad model update: an index is outside [0, {limit})")
    waiting = doc.get("waiting")
    offset = doc.get("offset")
    if offset is not None and not (
        isinstance(offset, (int, float)) and not isinstance(offset, bool) and np.isfinite(offset)
    ):
        raise DecodeError("bad model update: 'offset' must be a finite number")
    applied = doc.get("applied", [])
    if not isinstance(applied, list):
        raise DecodeError("bad model update: 'applied' must be a list")
    return ModelUpdate(
        run=doc["run"],
        task=doc["task"],
        shard=_int(doc, "shard"),
        version=_int(doc, "version"),
        clock={str(k): v for k, v in clock.items()},
        indices=idx,
        values=values,
        applied=applied,
        rejected=_int(doc, "rejected", 0),
        ts=_int(doc, "ts", 0),
        pushes_applied=_int(doc, "pushes_applied", 0),
        duplicates_skipped=_int(doc, "duplicates_skipped", 0),
        waiting=None if waiting is None else _int(doc, "waiting"),
        bits=None if doc.get("bits") is None else _int(doc, "bits", low=1),
        offset=None if offset is None else float(offset),
        rows=None if doc.get("rows") is None else _int(doc, "rows"),
        state=state,
    )


def _object(text, what: str) -> dict:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"bad model update: invalid {what}: {exc}") from None
    if not isinstance(doc, dict):
        raise DecodeError(f"bad model update: its {what} is not a JSON object")
    return doc


def _json(raw) -> tuple:
    doc = _object(raw, "JSON")
    indices = doc.get("indices", [])
    if not isinstance(indices, list) or not all(type(i) is int for i in indices):
        raise DecodeError("bad model update: 'indices' must be a list of integers")
    idx = np.asarray(indices, np.int64)
    state = doc.get("state")
    if state is not None:
        if not isinstance(state, dict):
            raise DecodeError("bad model update: 'state' must be an object")
        state = {str(k): _floats(v, idx.size, f"state.{k}") for k, v in state.items()}
    return doc, idx, _floats(doc.get("values", []), idx.size, "values"), state


def _binary(raw: bytes) -> tuple:
    start = len(MAGIC) + 4
    if len(raw) < start:
        raise DecodeError("bad model update: a binary update shorter than its header")
    (size,) = struct.unpack_from("<I", raw, len(MAGIC))
    doc = _object(raw[start : start + size], "binary header")
    n = _int(doc, "n", 0)
    names = doc.get("state")
    if names is not None and (
        not isinstance(names, list)
        or not all(isinstance(k, str) and k for k in names)
        or len(set(names)) != len(names)
    ):
        raise DecodeError("bad model update: 'state' must list distinct array names")
    arrays = 1 + (len(names) if names is not None else 0)
    at = start + size
    expected = at + n * (4 + 8 * arrays)
    if len(raw) != expected:
        raise DecodeError(f"bad model update: {len(raw)} bytes, its header says {expected}")
    idx = np.frombuffer(raw, "<i4", n, at).astype(np.int64)
    floats = np.frombuffer(raw, "<f8", n * arrays, at + 4 * n).reshape(arrays, n)
    if not np.isfinite(floats).all():
        raise DecodeError("bad model update: 'values' and 'state' must be finite numbers")
    state = None if names is None else {k: floats[i + 1] for i, k in enumerate(names)}
    return doc, idx, floats[0], state
