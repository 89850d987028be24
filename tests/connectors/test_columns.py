"""The columnar record format: what it keeps, what it dead-letters and why, and that its
hashing is the one-event format's (no JVM, no broker)."""

import json
import random

import numpy as np
import orjson
import pytest

from connectors import hashing
from connectors.columns import _plain, decode_columns, encode_columns, event_by_event
from connectors.errors import DecodeError
from connectors.events import decode_event
from connectors.hashing import hash_batch, hash_columns


def docs(seed: int, n: int = 300) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        features = {}
        for name in rng.sample(["os", "site", "price", "hour", "mixed", "zero", "x"], 5):
            if name in ("price", "x"):
                features[name] = rng.choice([rng.uniform(-5, 5), rng.randint(-3, 3)])
            elif name == "zero":
                features[name] = 0
            elif name == "mixed":
                features[name] = rng.choice(["a", "b", 7, 2.5])
            else:
                features[name] = f"v{rng.randint(0, 40)}"
        out.append({"event_id": f"e{seed}-{i}", "ts": 1000 + i, "label": rng.randint(0, 1),
                    "task": rng.choice(["ctr", "fraud"]), "features": features})  # fmt: skip
    return out


def assert_the_events_of(cols, bad, given: list[dict]) -> None:
    """A clean record's ``decode`` result: every event of ``given``, as the one-event
    decoder keeps it, hashed as ``hash_batch`` hashes the events (values and types)."""
    assert bad == [] and len(cols) == len(given)
    assert [cols.event(i) for i in range(len(cols))] == [
        json.loads(decode_event(json.dumps(d).encode()).to_json()) for d in given
    ]
    for bits in (4, 20):  # 2**4: many collisions within an event
        got = hash_columns(cols.features, len(cols), bits)
        want = hash_batch([d["features"] for d in given], bits)
        pairs = zip(got, want, strict=True)
        assert all(np.array_equal(g, w) and g.dtype == w.dtype for g, w in pairs)


def test_a_clean_record_decodes_to_its_events_and_hashes_as_they_do():
    for seed in range(5):
        given = docs(seed)
        assert_the_events_of(*decode_columns(encode_columns(given)), given)


def test_only_a_record_with_an_index_shared_within_an_event_goes_through_scipy(monkeypatch):
    """Rows whose features all hash apart are sorted as a table; a record with one event
    whose features share an index is summed by scipy, bit for bit as scikit-learn sums it."""
    calls = []
    summed = hashing._hash_columns_summed
    monkeypatch.setattr(hashing, "_hash_columns_summed", lambda *a: calls.append(1) or summed(*a))
    given = docs(3)
    cols, _ = decode_columns(encode_columns(given))
    for bits, through_scipy in ((24, 0), (2, 1)):
        got = hash_columns(cols.features, len(cols), bits)
        want = hash_batch([d["features"] for d in given], bits)
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
        assert len(calls) == through_scipy


def test_each_bad_event_is_named_by_index_and_the_rest_of_the_record_kept():
    given = docs(7, n=10)
    record = orjson.loads(encode_columns(given))
    record["label"][2] = 2
    record["event_id"][4] = ""
    record["features"]["os"][6] = [1]  # a list is no feature value
    record["features"]["site"][8] = 10**17  # beyond 2**53
    cols, bad = decode_columns(orjson.dumps(record))
    assert [b.index for b in bad] == [2, 4, 6, 8]
    assert all(b.reason for b in bad)
    assert json.loads(bad[0].payload)["label"] == 2  # the event as its own JSON object
    assert cols.event_ids == [d["event_id"] for i, d in enumerate(given) if i not in (2, 4, 6, 8)]
    assert hash_columns(cols.features, len(cols), 12)[0].size == len(cols) + 1


def test_a_record_that_is_not_columns_is_dead_lettered_whole():
    for raw in (
        b"{oops",
        None,
        b"[1, 2]",
        b'{"event_id": []}',
        b'{"event_id": ["a"], "ts": [1, 2], "label": [0], "features": {}}',
        b'{"event_id": ["a"], "ts": [1], "features": {}}',  # no label column
        b'{"event_id": ["a"], "ts": [1], "label": [0], "features": {"f": 3}}',
    ):
        cols, bad = decode_columns(raw)
        assert len(cols) == 0 and len(bad) == 1 and bad[0].index is None, raw
        assert bad[0].payload == raw and bad[0].reason


def test_requests_may_leave_labels_out():
    record = b'{"event_id": ["a", "b"], "ts": [1, 2], "features": {"os": ["ios", null]}}'
    cols, bad = decode_columns(record, require_label=False)
    assert bad == [] and cols.labels == [None, None] and cols.tasks == ["default", "default"]


def test_the_column_checks_accept_only_what_the_event_checks_accept():
    rng = random.Random(3)
    odd = ["", "x" * 300, None, True, 1.5, -1, 2**60, "ok", [], {}]
    for _ in range(300):
        record = orjson.loads(encode_columns(docs(rng.randint(0, 99), n=6)))
        for _ in range(rng.randint(0, 3)):  # a few odd values anywhere
            column = rng.choice(["event_id", "ts", "label", "task", "features"])
            if column == "features":
                col = record["features"][rng.choice(sorted(record["features"]))]
            else:
                col = record[column] if isinstance(record[column], list) else None
            if col is not None:
                col[rng.randrange(len(col))] = rng.choice(odd)
        cols, bad = decode_columns(orjson.dumps(record))
        if not bad:  # the fast path kept all: the event-by-event path keeps the same
            kept, slow_bad = event_by_event(cols, True)
            assert slow_bad == [] and kept.event_ids == cols.event_ids
        for b in bad:  # what it refused, the one-event decoder refuses
            if b.index is not None and b.payload is not None:
                with pytest.raises(DecodeError):
                    decode_event(b.payload)
        for i in range(len(cols)):  # and what it kept, it keeps
            decode_event(orjson.dumps(cols.event(i)))
        assert _plain(cols, True) or len(cols) == 0
