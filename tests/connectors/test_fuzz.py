"""Thousands of mutated records thrown at every decoder: each one decodes or raises
``DecodeError``; nothing else may escape (it would stop the job, and a restart would meet the
same record again)."""

import json
import random

import numpy as np
import pytest

from connectors.errors import DecodeError
from connectors.events import Event, _plain_events, decode_event, decode_events
from connectors.messages import decode_update

EVENT = {"event_id": "e-1", "ts": 1763800000123, "task": "ctr", "label": 1,
         "features": {"site": "a1b2", "device": "ios", "hour": 13, "price": 2.5}}  # fmt: skip
UPDATE = {"run": "r-1", "task": "ctr", "shard": 1, "version": 7, "clock": {"ctr#0": 6},
          "applied": [["ctr#0", 6]], "rejected": 0, "indices": [3, 9], "values": [0.5, -1.0],
          "ts": 5, "state": {"z": [1.0, 2.0], "n": [0.1, 0.2]}}  # fmt: skip
ODD_VALUES = [None, True, [], {}, [1, [2]], "", "x" * 3000, -1, 2**70, 10**400, 1e308,
              -0.0, "\ud800", "a/b", "../..", "#", 3.5, {"a": {"b": {}}}]  # fmt: skip
ODD_TEXT = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"\xff", b"\x00", b'"\\ud800"',
            b"[" * 5000, b"{" * 3000, b'"' + b"\\" * 7, b"nul",
            b"99999999999999999999999"]  # fmt: skip


def _mutants(doc: dict, rng: random.Random, n: int):
    base = json.dumps(doc).encode()
    yield None
    yield b""
    yield b"[" * 3000 + b"]" * 3000
    yield b'{"features":' * 3000 + b"1" + b"}" * 3000
    for _ in range(n):
        kind = rng.randrange(5)
        if kind == 0:  # a field or a nested value replaced
            mutated = json.loads(base)
            target = mutated
            key = rng.choice(list(target))
            if isinstance(target[key], dict) and target[key] and rng.random() < 0.5:
                target, key = target[key], rng.choice(list(target[key]))
            target[key] = rng.choice(ODD_VALUES)
            yield json.dumps(mutated, allow_nan=True).encode()
        elif kind == 1:  # bytes flipped
            raw = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            yield bytes(raw)
        elif kind == 2:  # truncated
            yield base[: rng.randrange(len(base))]
        elif kind == 3:  # odd text spliced in
            at = rng.randrange(len(base))
            yield base[:at] + rng.choice(ODD_TEXT) + base[at:]
        else:  # a field dropped, or an unknown one added
            mutated = json.loads(base)
            if rng.random() < 0.5:
                mutated.pop(rng.choice(list(mutated)))
            else:
                mutated[rng.choice(["x", "shard", "values", "features"])] = rng.choice(ODD_VALUES)
            yield json.dumps(mutated).encode()


@pytest.mark.parametrize(
    ("decode", "doc"),
    [
        (decode_event, EVENT),
        (lambda raw: decode_event(raw, require_label=False), EVENT),
        (decode_update, UPDATE),
        (lambda raw: decode_update(raw, dim=10), UPDATE),
    ],  # fmt: skip
    ids=["event", "request", "update", "update-dim"],
)
def test_no_mutant_escapes_as_anything_but_a_decode_error(decode, doc):
    rng = random.Random(2026)
    outcomes = {"ok": 0, "rejected": 0}
    for raw in _mutants(doc, rng, 3000):
        for value in (raw, raw.decode("utf-8", "replace")) if raw else (raw,):
            try:
                decode(value)
                outcomes["ok"] += 1
            except DecodeError as exc:
                assert exc.reason, value
                outcomes["rejected"] += 1
    assert outcomes["ok"] > 100 and outcomes["rejected"] > 1000, outcomes  # both paths taken


def _each(raws, require_label):
    """decode_event record by record: each Event, or the reason it was refused."""
    out = []
    for raw in raws:
        try:
            out.append(decode_event(raw, require_label))
        except DecodeError as exc:
            out.append(exc.reason)
    return out


@pytest.mark.parametrize("require_label", [True, False], ids=["events", "requests"])
def test_a_batch_decodes_as_its_records_one_by_one(require_label):
    """decode_events checks a batch of plain records as a whole: whatever it accepts that
    way must be exactly what decode_event accepts, and every refusal keeps its reason."""
    rng = random.Random(11)
    good = [json.dumps({**EVENT, "event_id": f"e-{i}", "label": i % 2}).encode() for i in range(5)]
    unlabelled = json.dumps({k: v for k, v in EVENT.items() if k != "label"}).encode()
    wide = json.dumps({**EVENT, "features": {f"f{i}": "v" * 900 for i in range(60)}}).encode()
    batches = [good, [], good + [unlabelled], [wide] * 3, good + [wide]]
    batches += [[*good[:2], m, good[3]] for m in _mutants(EVENT, rng, 3000) if m is not None]
    whole = 0
    for batch in batches:
        results = decode_events(batch, require_label)
        got = [r if isinstance(r, Event) else r.reason for r in results]
        assert got == _each(batch, require_label), batch
        try:  # what decode_events does first: the whole batch at once
            whole += _plain_events(batch, require_label) is not None
        except Exception:  # then record by record
            pass
    assert whole > 100  # the batch path was taken, not only the record-by-record one


@pytest.mark.parametrize("task", ["../../escaped", "/abs", "a/b", "t#1", ".hidden", "..", "a b"])
def test_a_task_name_outside_the_safe_alphabet_is_refused(task):
    with pytest.raises(DecodeError, match="field 'task' must be letters, digits"):
        decode_event(json.dumps({**EVENT, "task": task}))


@pytest.mark.parametrize("task", ["ctr", "fraud-v2", "a.b_c", "X1"])
def test_plain_task_names_pass(task):
    assert decode_event(json.dumps({**EVENT, "task": task})).task == task


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"shard": 1e300}, "'shard' must be an integer"),
        ({"indices": [3, -1]}, "outside"),
        ({"indices": [3, 10]}, r"outside \[0, 10\)"),
        ({"values": [0.5]}, "2 finite numbers"),
        ({"state": {"z": [1.0, None], "n": [0.1, 0.2]}}, "state.z"),
        ({"version": -1}, "'version'"),
        ({"clock": {"ctr#0": "x"}}, "'clock'"),
        ({"run": 5}, "'run'"),
    ],  # fmt: skip
)
def test_an_update_that_could_corrupt_a_replica_is_refused(change, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_update(json.dumps({**UPDATE, **change}), dim=10)
    assert decode_update(json.dumps(UPDATE), dim=10).indices.tolist() == [3, 9]


def _binary_update(**change):
    from connectors.messages import ModelUpdate

    doc = {**UPDATE, **change}
    state = {k: np.array(v, float) for k, v in doc["state"].items()}
    return ModelUpdate(doc["run"], doc["task"], doc["shard"], doc["version"], doc["clock"],
                       np.array(doc["indices"]), np.array(doc["values"], float),
                       applied=doc["applied"], ts=doc["ts"], state=state).to_bytes()  # fmt: skip


def test_no_mutant_of_a_binary_update_escapes_as_anything_but_a_decode_error():
    base = _binary_update()
    rng = random.Random(7)
    outcomes = {"ok": 0, "rejected": 0}
    for _ in range(3000):
        raw = bytearray(base)
        kind = rng.randrange(3)
        if kind == 0:  # bytes flipped (header, lengths or arrays)
            for _ in range(rng.randint(1, 3)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        elif kind == 1:  # truncated
            raw = raw[: rng.randrange(len(raw))]
        else:  # bytes appended
            raw += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        try:
            decode_update(bytes(raw), dim=10)
            outcomes["ok"] += 1
        except DecodeError as exc:
            assert exc.reason
            outcomes["rejected"] += 1
    assert outcomes["ok"] > 100 and outcomes["rejected"] > 1000, outcomes


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"indices": [3, 10]}, r"outside \[0, 10\)"),
        ({"values": [0.5, float("nan")]}, "finite"),
        ({"state": {"z": [1.0, float("inf")], "n": [0.1, 0.2]}}, "finite"),
        ({"clock": {"ctr#0": -2}}, "'clock'"),
        ({"run": ""}, "'run'"),
    ],  # fmt: skip
)
def test_a_binary_update_that_could_corrupt_a_replica_is_refused(change, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_update(_binary_update(**change), dim=10)
    with pytest.raises(DecodeError, match="bytes, its header says"):
        decode_update(_binary_update()[:-1], dim=10)
    assert decode_update(_binary_update(), dim=10).indices.tolist() == [3, 9]
