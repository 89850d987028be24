"""The Arrow record format: what it keeps, what it dead-letters and why, and that its hashing
is the one-event format's (no JVM, no broker)."""

import json
import random

import orjson
import pyarrow as pa
import pytest

from connectors.arrow_records import decode_arrow, encode_arrow
from connectors.errors import DecodeError
from connectors.events import decode_event
from connectors.hashing import hash_columns
from tests.connectors.test_columns import assert_the_events_of, docs


def typed_docs(seed: int, n: int = 300) -> list[dict]:
    """``docs`` with one type per feature (an Arrow column has one)."""
    out = docs(seed, n)
    for doc in out:
        doc["features"].pop("mixed", None)
        for name in ("price", "x"):
            if name in doc["features"]:
                doc["features"][name] = float(doc["features"][name])
    return out


def record(columns: dict) -> bytes:
    """An Arrow record of these arrays, as a producer might write it."""
    batch = pa.RecordBatch.from_pydict(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def test_a_clean_record_decodes_to_its_events_and_hashes_as_they_do():
    for seed in range(5):
        given = typed_docs(seed)
        cols, bad = decode_arrow(encode_arrow(given))
        assert all(not isinstance(col, list) for col in cols.features.values())  # Arrow
        assert_the_events_of(cols, bad, given)


def test_each_bad_event_is_named_by_index_and_the_rest_of_the_record_kept():
    n = 10
    raw = record({
        "event_id": pa.array([f"e{i}" if i != 4 else "" for i in range(n)]),
        "ts": pa.array([i if i != 5 else -1 for i in range(n)], pa.int64()),
        "label": pa.array([0 if i != 2 else 2 for i in range(n)], pa.int8()),
        "features": pa.StructArray.from_arrays(
            [pa.array(["ios" if i != 6 else "x" * 2000 for i in range(n)]),
             pa.array([1.5 if i != 8 else float("nan") for i in range(n)])], ["os", "price"]),
    })  # fmt: skip
    cols, bad = decode_arrow(raw)
    assert [b.index for b in bad] == [2, 4, 5, 6, 8]
    assert all(b.reason for b in bad)
    assert json.loads(bad[0].payload)["label"] == 2  # the event as its own JSON object
    assert cols.event_ids == [f"e{i}" for i in (0, 1, 3, 7, 9)]
    assert cols.positions == [0, 1, 3, 7, 9]
    assert hash_columns(cols.features, len(cols), 12)[0].size == len(cols) + 1


def test_a_record_that_is_not_an_arrow_record_of_events_is_dead_lettered_whole():
    ok = {"event_id": pa.array(["a"]), "ts": pa.array([1]), "label": pa.array([0])}
    two = pa.BufferOutputStream()
    batch = pa.RecordBatch.from_pydict(ok)
    with pa.ipc.new_stream(two, batch.schema) as writer:
        writer.write_batch(batch)
        writer.write_batch(batch)
    for raw in (
        b"{oops",
        None,
        b"",
        two.getvalue().to_pybytes(),  # two batches
        record({"event_id": pa.array(["a"]), "label": pa.array([0])}),  # no ts
        record({"event_id": pa.array(["a"]), "ts": pa.array([1])}),  # no label
        record({**ok, "features": pa.array([3])}),  # features not a struct
        record({**ok, "extra": pa.array([3])}),
        record({k: v.slice(0, 0) for k, v in ok.items()}),  # no events
    ):
        cols, bad = decode_arrow(raw)
        assert len(cols) == 0 and len(bad) == 1 and bad[0].index is None, raw
        assert bad[0].payload == raw and bad[0].reason


def test_requests_may_leave_labels_out():
    raw = record(
        {
            "event_id": pa.array(["a", "b"]),
            "ts": pa.array([1, 2]),
            "features": pa.StructArray.from_arrays([pa.array(["ios", None])], ["os"]),
        }
    )
    cols, bad = decode_arrow(raw, require_label=False)
    assert bad == [] and cols.labels == [None, None] and cols.tasks == ["default", "default"]
    assert cols.event(1)["features"] == {}


def test_the_column_checks_accept_only_what_the_event_checks_accept():
    """Odd values of each column's own type anywhere: what is kept, the one-event decoder
    keeps; what is refused, it refuses."""
    rng = random.Random(5)
    odd = {
        "event_id": ["", "x" * 300, None, "ok"],
        "ts": [-1, None, 2**62],
        "label": [2, -1, None, 1],
        "task": ["", "bad name!", None, "ctr"],
        "os": ["y" * 1500, None, ""],
        "price": [float("nan"), float("inf"), 1e300, 2.0**60, None, -0.0],
    }
    types = {"event_id": pa.string(), "ts": pa.int64(), "label": pa.int8(), "task": pa.string()}
    for _ in range(200):
        given = typed_docs(rng.randint(0, 99), n=6)
        columns = {k: [d.get(k) for d in given] for k in types}
        features = {k: [d["features"].get(k) for d in given] for k in ("os", "price")}
        for _ in range(rng.randint(0, 3)):
            name = rng.choice(sorted(odd))
            target = columns.get(name, features.get(name))
            target[rng.randrange(len(target))] = rng.choice(odd[name])
        struct = pa.StructArray.from_arrays([pa.array(features["os"], pa.string()),
                                             pa.array(features["price"], pa.float64())],
                                            ["os", "price"])  # fmt: skip
        raw = record({**{k: pa.array(v, types[k]) for k, v in columns.items()},
                      "features": struct})  # fmt: skip
        cols, bad = decode_arrow(raw)
        assert len(cols) + len(bad) == len(given)
        for b in bad:
            if b.payload is not None:
                with pytest.raises(DecodeError):
                    decode_event(b.payload)
        for i in range(len(cols)):
            decode_event(orjson.dumps(cols.event(i)))


def test_a_feature_of_strings_and_numbers_cannot_be_encoded():
    mixed = [{"event_id": "a", "ts": 1, "label": 0, "features": {"f": "x"}},
             {"event_id": "b", "ts": 2, "label": 0, "features": {"f": 2}}]  # fmt: skip
    with pytest.raises(ValueError, match="feature 'f' mixes strings and numbers"):
        encode_arrow(mixed)
