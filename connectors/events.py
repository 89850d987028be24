"""The training event codec: strict JSON decoding and validation.

A training event (one Kafka record, keyed by ``event_id``)::

    {"event_id": "e-000123", "ts": 1763800000123, "task": "ctr", "label": 1,
     "features": {"site": "a1b2", "device": "ios", "hour": 13, "price": 2.5}}

String feature values are categorical, numbers numeric (see :mod:`connectors.hashing`).
A serving request is the same record without ``label``. Anything else raises
:class:`~connectors.errors.DecodeError` whose reason names the field, what was expected and
what arrived; callers route the raw record and that reason to ``dead-letters``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import NamedTuple

import orjson

from connectors.errors import DecodeError

MAX_RECORD_BYTES = 64 * 1024
MAX_FEATURES = 1024
MAX_NAME_CHARS = 128
MAX_VALUE_CHARS = 1024
MAX_ID_CHARS = 256
DEFAULT_TASK = "default"
MAX_INT_FEATURE = 2**53
# hashed feature values are clipped to [-DEFAULT_CLIP, DEFAULT_CLIP] before learning and
# serving (``--clip-features``; connectors.hashing.clip_values)
DEFAULT_CLIP = 1e6
_FIELDS = {"event_id", "ts", "task", "label", "features"}
# a task names state keys ("task#worker", "task/shard") and snapshot folders: a safe alphabet,
# no path separators, no leading dot (so never "." or "..")
_TASK_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # length checked before


class Event(NamedTuple):
    """A decoded, validated event. ``label`` is ``None`` for a serving request.

    A named tuple, not a frozen dataclass: one is made per event, and a frozen dataclass's
    ``__init__`` (a ``object.__setattr__`` per field) cost a tenth of the decoder's time."""

    event_id: str
    ts: int
    features: dict[str, str | float]
    label: int | None = None
    task: str = DEFAULT_TASK

    def to_json(self) -> str:
        doc = {"event_id": self.event_id, "ts": self.ts, "task": self.task}
        if self.label is not None:
            doc["label"] = self.label
        doc["features"] = self.features
        return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _reject_constant(name: str) -> float:
    raise DecodeError(f"non-finite number {name} in JSON (expected a finite number)")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def decode_event(raw: bytes | str, require_label: bool = True) -> Event:
    """Decode and validate one record.

    Parameters
    ----------
    raw
        The Kafka record value, UTF-8 JSON.
    require_label
        ``True`` for training events, ``False`` for serving requests (label optional).

    Examples
    --------
    >>> decode_event('{"event_id": "e1", "ts": 5, "label": 1, "features": {"os": "ios"}}').task
    'default'
    >>> decode_event('{"event_id": "e1", "ts": 5, "label": 2, "features": {}}')
    Traceback (most recent call last):
    ...
    connectors.errors.DecodeError: field 'label' must be 0 or 1, got 2
    """
    if raw is None:  # a tombstone (null-value record)
        raise DecodeError("null record (a tombstone): expected a JSON object")
    if not isinstance(raw, (bytes, str)):
        raise DecodeError(f"expected bytes or text, got {type(raw).__name__}")
    size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    if size > MAX_RECORD_BYTES:
        raise DecodeError(f"record too large: {size} bytes (limit {MAX_RECORD_BYTES})")
    try:
        return _decode(raw, require_label)
    except DecodeError:
        raise
    except Exception as exc:  # no record may escape as anything else: it would stop the job
        raise DecodeError(f"unreadable event: {type(exc).__name__}: {exc}"[:300]) from exc


def _decode(raw: bytes | str, require_label: bool) -> Event:
    try:
        doc = orjson.loads(raw)  # ~9x faster than json; strict: no NaN, no lone surrogates
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # json would recurse as deep, or deeper
            raise DecodeError(f"invalid JSON: nested too deeply ({exc})") from None
        return _validate(_strict_json(raw), require_label, fast=False)
    try:
        return _validate(doc, require_label, fast=True)
    except _MaybeHugeInteger:  # orjson reads integers past 64 bits as floats; json keeps them
        return _validate(_strict_json(raw), require_label, fast=False)


class _MaybeHugeInteger(Exception):
    """A feature value orjson may have read from an integer literal past 64 bits."""


def _validate(doc: object, require_label: bool, fast: bool) -> Event:
    """``fast``: parsed by orjson (no lone surrogates possible; huge integers became floats)."""
    if fast and type(doc) is dict:
        event = _plain_event(doc, require_label)
        if event is not None:
            return event
    if not isinstance(doc, dict):
        raise DecodeError(f"expected a JSON object, got {_type_name(doc)}")
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise DecodeError(f"unknown field {unknown[0]!r} (expected only {sorted(_FIELDS)})")

    event_id = doc.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise DecodeError(f"field 'event_id' must be a non-empty string, got {event_id!r:.60}")
    if len(event_id) > MAX_ID_CHARS:
        raise DecodeError(f"field 'event_id' longer than {MAX_ID_CHARS} characters")
    ts = doc.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise DecodeError(f"field 'ts' must be a non-negative integer (ms), got {ts!r:.60}")
    task = doc.get("task", DEFAULT_TASK)
    if not isinstance(task, str) or not task or len(task) > MAX_NAME_CHARS:
        raise DecodeError(f"field 'task' must be a non-empty string, got {task!r:.60}")
    label = doc.get("label")
    if label is None:
        if require_label:
            got = "null" if "label" in doc else "nothing"
            raise DecodeError(f"missing field 'label' (expected 0 or 1, got {got})")
    elif type(label) is not int or label not in (0, 1):
        raise DecodeError(f"field 'label' must be 0 or 1, got {json.dumps(label):.60}")
    features = _validate_features(doc.get("features", _MISSING), fast)
    if not fast:  # orjson refuses lone surrogates; json lets them through
        _check_unicode(event_id, task, features)
    if not _TASK_NAME.fullmatch(task):
        raise DecodeError(
            f"field 'task' must be letters, digits, '_', '-' or '.' (not first), got {task!r:.60}"
        )
    return Event(event_id, ts, features, label, task)


def valid_task_name(task: str) -> bool:
    """Whether ``task`` is a name the decoder accepts (and so a safe path component).

    >>> valid_task_name("ctr"), valid_task_name("../x"), valid_task_name(".hidden")
    (True, False, False)
    """
    return 0 < len(task) <= MAX_NAME_CHARS and bool(_TASK_NAME.fullmatch(task))


def _strict_json(raw: bytes | str) -> object:
    """The standard library's parser, for what orjson rejects: it names the reason (a NaN, a
    number out of range) in the words our dead letters use, or accepts text that the checks
    after it reject with a precise reason (a lone surrogate escape, an infinite number)."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError("invalid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"invalid JSON: {exc}") from exc


def _check_unicode(event_id: str, task: str, features: dict) -> None:
    """Reject text holding a lone surrogate: hashing or keying it would fail the job."""
    texts = (event_id, task, *features, *(v for v in features.values() if isinstance(v, str)))
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError(f"text with a lone UTF-16 surrogate: {text!r:.60}") from None


_MISSING = object()


def _plain_event(doc: dict, require_label: bool) -> Event | None:
    """The event of a common, valid document parsed by orjson, checked with as few Python
    operations as the rules allow; None if any rule may be broken (:func:`_validate` then
    checks field by field and names the reason).

    >>> _plain_event({"event_id": "e", "ts": 1, "label": 0, "features": {"a": 1}}, True).task
    'default'
    >>> _plain_event({"event_id": "e", "ts": 1, "label": True, "features": {}}, True) is None
    True
    """
    event_id, ts, label = doc.get("event_id"), doc.get("ts"), doc.get("label")
    task, features = doc.get("task", DEFAULT_TASK), doc.get("features")
    if (
        doc.keys() <= _FIELDS
        and type(event_id) is str
        and 0 < len(event_id) <= MAX_ID_CHARS
        and type(ts) is int
        and ts >= 0
        and type(task) is str
        and 0 < len(task) <= MAX_NAME_CHARS
        and (
            (type(label) is int and (label == 0 or label == 1))
            or (label is None and not require_label)
        )
        and type(features) is dict
        and len(features) <= MAX_FEATURES
        and _plainly_valid(features)
        and _TASK_NAME.fullmatch(task)
    ):
        return Event(event_id, ts, features, label, task)
    return None


def decode_events(raws: list, require_label: bool = True) -> list[Event | DecodeError]:
    """:func:`decode_event` over a batch of records: for each, what it returns, or the
    :class:`DecodeError` it raises. A batch of common, valid documents is checked as a whole
    (each rule once over all of it, in loops that run in C: about a third of the per-record
    checks' cost); any doubt sends the whole batch record by record, where each reason is
    named.

    >>> good = b'{"event_id": "e1", "ts": 5, "label": 1, "features": {"os": "ios"}}'
    >>> [type(r).__name__ for r in decode_events([good, good])]
    ['Event', 'Event']
    >>> [type(r).__name__ for r in decode_events([good, b'{"event_id": 1}'])]
    ['Event', 'DecodeError']
    """
    try:
        events = _plain_events(raws, require_label)
    except Exception:  # anything odd: the record-by-record path names it
        events = None
    if events is not None:
        return events
    out: list[Event | DecodeError] = []
    for raw in raws:
        try:
            out.append(decode_event(raw, require_label))
        except DecodeError as exc:
            out.append(exc)
    return out


def plain_fields(ids: list, stamps: list, labels: list, tasks: list, require_label: bool) -> bool:
    """Whether the ids, timestamps, labels and task names of a batch of events (one entry per
    event, None where absent) all pass :func:`decode_event`'s rules, each rule checked once
    over the whole column; False if any may not (the caller then checks event by event)."""
    if set(map(type, ids)) != {str} or min(map(len, ids)) == 0 or max(map(len, ids)) > MAX_ID_CHARS:
        return False
    if set(map(type, stamps)) != {int} or min(stamps) < 0:
        return False
    kinds = set(map(type, labels))
    if not (kinds == {int} or (not require_label and kinds <= {int, type(None)})):
        return False
    if not set(labels) <= {0, 1, None}:
        return False
    return set(map(type, tasks)) == {str} and all(map(valid_task_name, set(tasks)))


def _plain_events(raws: list, require_label: bool) -> list[Event] | None:
    """The events of a batch whose every record :func:`_plain_event` would accept, checked
    rule by rule over the whole batch; None if any record may break a rule."""
    if not raws:
        return []
    longest = max(map(len, raws)) if set(map(type, raws)) == {bytes} else MAX_RECORD_BYTES + 1
    if longest > MAX_RECORD_BYTES:
        return None
    docs = list(map(orjson.loads, raws))
    if set(map(type, docs)) != {dict} or not all(map(_FIELDS.issuperset, docs)):
        return None
    get, many = dict.get, itertools.repeat
    ids = list(map(get, docs, many("event_id")))
    stamps = list(map(get, docs, many("ts")))
    labels = list(map(get, docs, many("label")))
    tasks = list(map(get, docs, many("task"), many(DEFAULT_TASK)))
    features = list(map(get, docs, many("features")))
    if not plain_fields(ids, stamps, labels, tasks, require_label):
        return None
    if set(map(type, features)) != {dict} or max(map(len, features)) > MAX_FEATURES:
        return None
    names = list(itertools.chain.from_iterable(features))
    if names:
        lengths = set(map(len, names))
        if min(lengths) == 0 or max(lengths) > MAX_NAME_CHARS:
            return None
        values = list(itertools.chain.from_iterable(map(dict.values, features)))
        kinds = set(map(type, values))
        if not kinds <= _PLAIN_KINDS:
            return None
        # no text in a record is longer than the record: short records need no length check
        if longest > MAX_VALUE_CHARS and str in kinds:
            if max(map(len, filter(_is_str, values))) > MAX_VALUE_CHARS:
                return None
        if (
            kinds - {str}
            and max(map(abs, itertools.filterfalse(_is_str, values))) > MAX_INT_FEATURE
        ):
            return None
    return list(map(Event, ids, stamps, features, labels, tasks))


def _validate_features(features: object, fast: bool = False) -> dict[str, str | float]:
    if features is _MISSING:
        raise DecodeError("missing field 'features' (expected an object)")
    if not isinstance(features, dict):
        raise DecodeError(f"field 'features' must be an object, got {_type_name(features)}")
    if len(features) > MAX_FEATURES:
        raise DecodeError(f"too many features: {len(features)} (limit {MAX_FEATURES})")
    if _plainly_valid(features):
        return features
    for name, value in features.items():  # the reason, feature by feature
        if not name or len(name) > MAX_NAME_CHARS:
            raise DecodeError(f"feature name must have 1-{MAX_NAME_CHARS} characters: {name!r:.60}")
        if isinstance(value, str):
            if len(value) > MAX_VALUE_CHARS:
                raise DecodeError(f"feature {name!r} value longer than {MAX_VALUE_CHARS} chars")
        elif _is_number(value):
            if fast and type(value) is float and abs(value) >= 2.0**64:
                raise _MaybeHugeInteger
            if isinstance(value, int) and abs(value) > MAX_INT_FEATURE:
                raise DecodeError(
                    f"feature {name!r} is out of range: {len(str(abs(value)))} digits"
                )
            if not math.isfinite(value):
                raise DecodeError(f"feature {name!r} is not finite: {value!r}")
        else:
            raise DecodeError(
                f"feature {name!r} must be a string or a number, got {_type_name(value)}"
            )
    return features


_PLAIN_KINDS = {str, int, float}
_is_str = str.__instancecheck__


def _plainly_valid(features: dict) -> bool:
    """The common case, checked with loops that run in C (about 4x faster than the loop that
    names a reason): short non-empty names, short strings, numbers no larger than 2**53.
    ``False`` says nothing is wrong yet, only that each feature must be checked."""
    if not features:
        return True
    if "" in features or max(map(len, features)) > MAX_NAME_CHARS:
        return False
    values = features.values()
    kinds = set(map(type, values))  # bool, None, list, dict: not plain
    if not kinds <= _PLAIN_KINDS:
        return False
    if str in kinds and max(map(len, filter(_is_str, values))) > MAX_VALUE_CHARS:
        return False
    if len(kinds) > 1 or str not in kinds:  # numbers: finite and within the integer bound
        if max(map(abs, itertools.filterfalse(_is_str, values))) > MAX_INT_FEATURE:
            return False
    return True


def split_record(line: bytes | None, ndjson: bool) -> list:
    """The events of one Kafka record as ``(index, raw)``: the record itself (index None), or
    with ``ndjson`` each non-empty line of it (index = its position among them).

    >>> split_record(b'{"a":1}\\n\\n{"b":2}\\n', True)
    [(0, b'{"a":1}'), (1, b'{"b":2}')]
    >>> split_record(None, True)
    [(None, None)]
    """
    if not ndjson or line is None:
        return [(None, line)]
    return list(enumerate(part for part in line.split(b"\n") if part.strip()))
