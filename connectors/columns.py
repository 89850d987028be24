"""The columnar record format: one Kafka record carries many events as columns.

::

    {"event_id": ["e-1", "e-2"], "ts": [1763800000000, 1763800000010], "label": [0, 1],
     "task": "ctr", "features": {"os": ["ios", null], "price": [2.5, 1.0]}}

Every column holds one entry per event, in order; ``task`` is one name for every event or a
column of names (absent: ``default``); a ``null`` in a feature column means the event lacks
that feature. Each event must be one that :func:`connectors.events.decode_event` accepts as
its own JSON object, so the rules (and the reasons) are the one-event format's. A record of
1,000 events of the ``ctr`` stream takes 159 bytes per event against 382 as NDJSON, and is
decoded, checked, hashed and grouped by worker in two thirds of the time (4.4 against 7.1 µs
per event, ``benchmarks/hash_bench.py``).

:func:`decode_columns` checks whole columns at once; only a record that may hold a bad event
is taken apart event by event, so each bad one is named with its index and dead-lettered as
its own JSON object while the rest of the record is kept.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import orjson

from connectors.errors import DecodeError
from connectors.events import (
    DEFAULT_TASK,
    MAX_FEATURES,
    MAX_INT_FEATURE,
    MAX_NAME_CHARS,
    MAX_VALUE_CHARS,
    Event,
    decode_event,
    plain_fields,
)

_FIELDS = {"event_id", "ts", "label", "task", "features"}
_VALUE_KINDS = {str, int, float, type(None)}


class Columns(NamedTuple):
    """Events as columns; ``features`` maps a name to one value (or None) per event;
    ``positions``: each event's index in its record."""

    event_ids: list
    ts: list
    labels: list
    tasks: list
    features: dict
    positions: list

    def __len__(self) -> int:
        return len(self.event_ids)

    def without(self, dropped: list) -> Columns:
        """These columns less the events at ``dropped`` (indices into them).

        >>> c = Columns(["a", "b", "c"], [1, 2, 3], [0, 1, 0], ["t"] * 3, {"x": [1, None, 2]},
        ...             [0, 1, 2])
        >>> c.without([1]).event_ids, c.without([1]).features, c.without([1]).positions
        (['a', 'c'], {'x': [1, 2]}, [0, 2])
        """
        drop = set(dropped)
        keep = [i for i in range(len(self)) if i not in drop]

        def pick(col):  # a list, or an Arrow array (connectors.arrow_records)
            return [col[i] for i in keep] if isinstance(col, list) else col.take(keep)

        return Columns(pick(self.event_ids), pick(self.ts), pick(self.labels), pick(self.tasks),
                       {k: pick(v) for k, v in self.features.items()},
                       pick(self.positions))  # fmt: skip

    def event(self, i: int) -> dict:
        """Event ``i`` as the one-event format's document."""
        doc = {"event_id": self.event_ids[i], "ts": self.ts[i], "task": self.tasks[i]}
        if self.labels[i] is not None:
            doc["label"] = self.labels[i]
        values = ((k, _value(col, i)) for k, col in self.features.items())
        doc["features"] = {k: v for k, v in values if v is not None}
        return doc


def _value(col, i: int):
    """Entry ``i`` of a feature column: a list, or an Arrow array."""
    return col[i] if isinstance(col, list) else col[i].as_py()


class BadEvent(NamedTuple):
    index: int | None  # None: the record itself is not a columns record
    reason: str
    payload: bytes | None  # the event as its own JSON object, or the whole record


def encode_columns(docs: list[dict]) -> bytes:
    """One columns record of ``docs`` (documents of the one-event format).

    >>> rec = encode_columns([{"event_id": "a", "ts": 1, "label": 0, "task": "t",
    ...                        "features": {"os": "ios"}},
    ...                       {"event_id": "b", "ts": 2, "label": 1, "task": "t",
    ...                        "features": {"x": 2}}])
    >>> rec.decode()
    '{"event_id":["a","b"],"ts":[1,2],"label":[0,1],"task":"t","features":{"os":["ios",null],"x":[null,2]}}'
    """
    names = dict.fromkeys(name for doc in docs for name in doc["features"])
    tasks = [doc.get("task", DEFAULT_TASK) for doc in docs]
    out = {"event_id": [doc["event_id"] for doc in docs], "ts": [doc["ts"] for doc in docs]}
    if any("label" in doc for doc in docs):
        out["label"] = [doc.get("label") for doc in docs]
    out["task"] = tasks[0] if len(set(tasks)) == 1 else tasks
    out["features"] = {k: [doc["features"].get(k) for doc in docs] for k in names}
    return orjson.dumps(out)


def decode_columns(raw: bytes | None, require_label: bool = True) -> tuple[Columns, list]:
    """The events of one columns record that decode, as ``Columns``, and a ``BadEvent``
    for each that does not (or one for the whole record, index None, if it is not a columns
    record at all)."""
    try:
        doc = orjson.loads(raw)
        cols = _columns(doc, require_label)
    except (orjson.JSONDecodeError, DecodeError, TypeError) as exc:
        reason = exc.reason if isinstance(exc, DecodeError) else f"not a columns record: {exc}"
        return Columns([], [], [], [], {}, []), [BadEvent(None, reason, raw)]
    if _plain(cols, require_label):
        return cols, []
    return event_by_event(cols, require_label)


def _columns(doc, require_label: bool) -> Columns:
    """The columns of a decoded record, lengths checked; types not yet."""
    if not isinstance(doc, dict) or not _FIELDS.issuperset(doc):
        raise DecodeError(f"a columns record is an object with fields {sorted(_FIELDS)}")
    ids = doc.get("event_id")
    if not isinstance(ids, list) or not ids:
        raise DecodeError("field 'event_id' must be a non-empty array")
    n = len(ids)
    task = doc.get("task", DEFAULT_TASK)
    tasks = task if isinstance(task, list) else [task] * n
    features = doc.get("features")
    if not isinstance(features, dict):
        raise DecodeError("field 'features' must be an object of arrays")
    labels = doc.get("label", [None] * n)
    for name, col in (("ts", doc.get("ts")), ("label", labels), ("task", tasks),
                      *(("features." + k, v) for k, v in features.items())):  # fmt: skip
        if not isinstance(col, list) or len(col) != n:
            raise DecodeError(f"column {name!r} must be an array of {n} entries, one per event")
    if require_label and "label" not in doc:
        raise DecodeError("missing column 'label'")
    return Columns(ids, doc["ts"], labels, tasks, features, list(range(n)))


def _plain(c: Columns, require_label: bool) -> bool:
    """Whether every event is one the one-event decoder accepts, checked column by column
    (each rule once over all of it); False if any event may break a rule."""
    if not plain_fields(c.event_ids, c.ts, c.labels, c.tasks, require_label):
        return False
    if len(c.features) > MAX_FEATURES:
        return False
    for name, col in c.features.items():
        if not 0 < len(name) <= MAX_NAME_CHARS:
            return False
        kinds = set(map(type, col))
        if not kinds <= _VALUE_KINDS:
            return False
        if str in kinds and max(len(v) for v in col if type(v) is str) > MAX_VALUE_CHARS:
            return False
        if kinds & {int, float}:
            numbers = [v for v in col if type(v) is int or type(v) is float]
            if max(map(abs, numbers)) > MAX_INT_FEATURE:
                return False
    return True


def event_by_event(c: Columns, require_label: bool) -> tuple[Columns, list]:
    """Each event through the one-event decoder: the good ones as columns, the bad ones
    named."""
    good: list[Event] = []
    positions: list[int] = []
    bad: list[BadEvent] = []
    for i in range(len(c)):
        try:
            doc = c.event(i)
            payload = orjson.dumps(doc)
        except (TypeError, orjson.JSONEncodeError) as exc:
            bad.append(BadEvent(i, f"event {i} cannot be encoded alone: {exc}", None))
            continue
        try:
            good.append(decode_event(payload, require_label))
            positions.append(i)
        except DecodeError as exc:
            bad.append(BadEvent(i, exc.reason, payload))
    names = dict.fromkeys(itertools.chain.from_iterable(e.features for e in good))
    kept = Columns(
        [e.event_id for e in good],
        [e.ts for e in good],
        [e.label for e in good],
        [e.task for e in good],
        {k: [e.features.get(k) for e in good] for k in names},
        positions,
    )
    return kept, bad
