import json
import math

import pytest

from connectors.errors import DecodeError, StreamshardError
from connectors.events import MAX_FEATURES, MAX_RECORD_BYTES, Event, decode_event

GOOD = {
    "event_id": "e-1",
    "ts": 1763800000123,
    "task": "ctr",
    "label": 1,
    "features": {"site": "a1b2", "device": "ios", "hour": 13, "price": 2.5},
}


def enc(doc) -> str:
    return json.dumps(doc)


def test_accepts_the_design_example():
    event = decode_event(enc(GOOD))
    assert event == Event("e-1", 1763800000123, GOOD["features"], 1, "ctr")


def test_task_defaults_and_bytes_input():
    doc = {k: v for k, v in GOOD.items() if k != "task"}
    assert decode_event(enc(doc).encode()).task == "default"


def test_request_without_label_is_accepted_only_when_allowed():
    doc = {k: v for k, v in GOOD.items() if k != "label"}
    assert decode_event(enc(doc), require_label=False).label is None
    with pytest.raises(DecodeError, match="missing field 'label'"):
        decode_event(enc(doc))


def test_to_json_round_trips():
    event = decode_event(enc(GOOD))
    assert decode_event(event.to_json()) == event


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "invalid JSON"),
        (b"\xff\xfe{", "invalid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ("null", "expected a JSON object, got null"),
        (enc({**GOOD, "extra": 1}), "unknown field 'extra'"),
        (enc({**GOOD, "event_id": ""}), "field 'event_id' must be a non-empty string"),
        (enc({**GOOD, "event_id": 7}), "field 'event_id' must be a non-empty string"),
        (enc({**GOOD, "ts": "now"}), "field 'ts' must be a non-negative integer"),
        (enc({**GOOD, "ts": -1}), "field 'ts' must be a non-negative integer"),
        (enc({**GOOD, "ts": True}), "field 'ts' must be a non-negative integer"),
        (enc({**GOOD, "task": ""}), "field 'task' must be a non-empty string"),
        (enc({**GOOD, "label": 2}), "field 'label' must be 0 or 1, got 2"),
        (enc({**GOOD, "label": "1"}), "field 'label' must be 0 or 1"),
        (enc({**GOOD, "label": True}), "field 'label' must be 0 or 1, got true"),
        (enc({**GOOD, "label": 1.0}), "field 'label' must be 0 or 1, got 1.0"),
        (enc({**GOOD, "label": None}), "missing field 'label' (expected 0 or 1, got null)"),
        (enc({k: v for k, v in GOOD.items() if k != "features"}), "missing field 'features'"),
        (enc({**GOOD, "features": [1]}), "field 'features' must be an object, got list"),
        (enc({**GOOD, "features": {"a": None}}), "feature 'a' must be a string or a number"),
        (enc({**GOOD, "features": {"a": [1]}}), "feature 'a' must be a string or a number"),
        (enc({**GOOD, "features": {"a": True}}), "feature 'a' must be a string or a number"),
        (enc({**GOOD, "features": {"": 1}}), "feature name must have"),
        (enc({**GOOD, "features": {"a": 10**20}}), "feature 'a' is out of range"),
        (enc(GOOD).replace("2.5", "NaN"), "non-finite number NaN"),
        (enc(GOOD).replace("2.5", "-Infinity"), "non-finite number -Infinity"),
        (enc(GOOD).replace("2.5", "1e400"), "feature 'price' is not finite"),
        (enc({**GOOD, "features": {"a": "x" * 2000}}), "value longer than"),
        (
            enc({**GOOD, "features": {f"f{i}": i + 1 for i in range(MAX_FEATURES + 1)}}),
            "too many features",
        ),
        (enc({**GOOD, "features": {"blob": "x" * MAX_RECORD_BYTES}}), "record too large"),
        (enc({**GOOD, "features": {"a": "x\ud800"}}), "lone UTF-16 surrogate"),
        (enc({**GOOD, "features": {"\udfff": 1}}).encode(), "lone UTF-16 surrogate"),
        (enc({**GOOD, "event_id": "\udc00"}), "lone UTF-16 surrogate"),
        (enc({**GOOD, "task": "tX"}).replace("tX", "t\\uDBFF").encode(), "lone UTF-16 surrogate"),
    ],
)
def test_rejections_name_the_reason(raw, reason):
    with pytest.raises(DecodeError) as info:
        decode_event(raw)
    assert reason in info.value.reason
    assert isinstance(info.value, StreamshardError)


def test_surrogate_pairs_pass():
    event = decode_event(enc({**GOOD, "features": {"emoji": "\U0001f600"}}))  # \ud83d\ude00
    assert event.features["emoji"] == "\U0001f600"


def test_finite_numbers_pass():
    doc = {**GOOD, "features": {"a": 0, "b": -1.5e300, "c": 2**53}}
    assert all(math.isfinite(v) for v in decode_event(enc(doc)).features.values())


def test_the_fast_path_accepts_exactly_what_the_field_by_field_checks_accept():
    import random

    from connectors.events import _plain_event, _validate

    rng = random.Random(7)
    odd = [None, True, False, 0, 1, 2, -1, 1.0, 2**60, 1e300, "", "x" * 300, "a/b", ".x",
           [], {}, {"a": []}, {"": 1}, {"a": None}, {"a": "y" * 2000}, {"a": 2**54}]  # fmt: skip
    fields = [*GOOD, "extra"]
    agreed = accepted = 0
    for _ in range(5_000):
        doc = json.loads(json.dumps(GOOD))
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(fields)
            if rng.random() < 0.2:
                doc.pop(name, None)
            else:
                doc[name] = rng.choice(odd)
        for require_label in (True, False):
            fast = _plain_event(doc, require_label)
            try:
                slow = _validate(doc, require_label, fast=False)
            except DecodeError:
                slow = None
            if fast is not None:  # the fast path may decline, never accept what is refused
                assert fast == slow, doc
                accepted += 1
            agreed += (fast is None) == (slow is None)
    # every valid document takes the fast path (594 of these 10,000 cases)
    assert accepted > 500 and agreed == 10_000
