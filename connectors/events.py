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

import json
import math
import re
from dataclasses import dataclass, field

from connectors.errors import DecodeError

MAX_RECORD_BYTES = 64 * 1024
MAX_FEATURES = 1024
MAX_NAME_CHARS = 128
MAX_VALUE_CHARS = 1024
MAX_ID_CHARS = 256
DEFAULT_TASK = "default"
MAX_INT_FEATURE = 2**53
_FIELDS = {"event_id", "ts", "task", "label", "features"}
# a JSON escape of a UTF-16 surrogate ("\ud800"): alone, it decodes to a str that cannot be
# encoded, so it could be neither hashed nor keyed
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class Event:
    """A decoded, validated event. ``label`` is ``None`` for a serving request."""

    event_id: str
    ts: int
    features: dict[str, str | float] = field(repr=False)
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
    size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    if size > MAX_RECORD_BYTES:
        raise DecodeError(f"record too large: {size} bytes (limit {MAX_RECORD_BYTES})")
    try:
        doc = json.loads(raw, parse_constant=_reject_constant)
    except DecodeError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"invalid JSON: {exc}") from exc
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
    features = _validate_features(doc.get("features", _MISSING))
    pattern = _SURROGATE_ESCAPE if isinstance(raw, str) else _SURROGATE_ESCAPE_BYTES
    if pattern.search(raw):
        _check_unicode(event_id, task, features)
    return Event(event_id, ts, features, label, task)


def _check_unicode(event_id: str, task: str, features: dict) -> None:
    """Reject text holding a lone surrogate: hashing or keying it would fail the job."""
    texts = (event_id, task, *features, *(v for v in features.values() if isinstance(v, str)))
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError(f"text with a lone UTF-16 surrogate: {text!r:.60}") from None


_MISSING = object()


def _validate_features(features: object) -> dict[str, str | float]:
    if features is _MISSING:
        raise DecodeError("missing field 'features' (expected an object)")
    if not isinstance(features, dict):
        raise DecodeError(f"field 'features' must be an object, got {_type_name(features)}")
    if len(features) > MAX_FEATURES:
        raise DecodeError(f"too many features: {len(features)} (limit {MAX_FEATURES})")
    for name, value in features.items():
        if not name or len(name) > MAX_NAME_CHARS:
            raise DecodeError(f"feature name must have 1-{MAX_NAME_CHARS} characters: {name!r:.60}")
        if isinstance(value, str):
            if len(value) > MAX_VALUE_CHARS:
                raise DecodeError(f"feature {name!r} value longer than {MAX_VALUE_CHARS} chars")
        elif _is_number(value):
            if isinstance(value, int) and abs(value) > MAX_INT_FEATURE:
                raise DecodeError(f"feature {name!r} is out of range: {value:.3g}")
            if not math.isfinite(value):
                raise DecodeError(f"feature {name!r} is not finite: {value!r}")
        else:
            raise DecodeError(
                f"feature {name!r} must be a string or a number, got {_type_name(value)}"
            )
    return features
