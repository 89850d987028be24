"""The validate job on a real mini-cluster against the embedded broker, exactly-once outputs."""

import json

import numpy as np
import pytest

from connectors.admin import create_topics, produce, read_records
from operators.synthetic import (
    EXPECTED_REASON,
    MALFORMED_KINDS,
    CtrSettings,
    CtrStream,
    corrupt,
    encode,
)
from tests.cli_helpers import streamshard
from tests.txn import committed_records

pytestmark = [pytest.mark.flink, pytest.mark.kafka]

EVENTS = 10_000


@pytest.mark.parametrize("failure", [False, True], ids=["calm", "failure-after-a-checkpoint"])
def test_valid_events_out_and_every_bad_one_in_dead_letters(kafka, topic_name, tmp_path, failure):
    """Every input record in exactly one of the two outputs, exactly once in the committed
    view; also when the job fails once after a checkpoint and restarts from it."""
    docs = [doc for doc, _ in CtrStream(CtrSettings(events=EVENTS, seed=11)).events()]
    bad_at = set(
        np.random.default_rng(1).choice(EVENTS, size=EVENTS // 100, replace=False).tolist()
    )
    records, expected_reason, expected_valid = [], {}, set()
    for i, doc in enumerate(docs):
        if i in bad_at:
            kind = MALFORMED_KINDS[len(expected_reason) % len(MALFORMED_KINDS)]
            value = corrupt(doc, kind)
            expected_reason[value.decode()] = EXPECTED_REASON[kind]
        else:
            value = encode(doc)
            expected_valid.add(doc["event_id"])
        records.append((doc["event_id"].encode(), value))
    source, out, dlq = topic_name, f"{topic_name}-valid", f"{topic_name}-dlq"
    marker = tmp_path / "failed-once"
    create_topics(kafka, [source], partitions=2)
    ends = produce(kafka, source, records)

    result = streamshard(
        "validate",
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--input-topic",
        source,
        "--output-topic",
        out,
        "--dead-letter-topic",
        dlq,
        "--stop-at-offsets",
        ",".join(f"{p}={o}" for p, o in ends.items()),
        "--checkpoint-interval",
        "1000",
        "--checkpoint-dir",
        f"file://{tmp_path}/ckpt",
        *(["--inject-failure", str(marker)] if failure else []),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"validated {EVENTS:,} records of {source} in "), summary
    if failure:
        assert marker.exists(), "the injected failure never fired"
        # the embedded broker hands aborted transactions to read_committed consumers: the
        # committed view is read from the transaction markers (tests/txn.py)
        valid = committed_records(kafka, out, count=len(expected_valid) + 1, idle=3)
        dead = committed_records(kafka, dlq, count=len(bad_at) + 1, idle=3)
    else:  # then the summary's count of dead letters is exact too
        assert summary.endswith(f"{len(expected_valid):,} valid to {out}, {len(bad_at):,} to {dlq}")
        # read_committed (the default of read_records): what the transactions committed
        valid = read_records(kafka, out, count=len(expected_valid) + 1, timeout=60, idle=3)
        dead = read_records(kafka, dlq, count=len(bad_at) + 1, timeout=30, idle=3)
    ids = [json.loads(r.value)["event_id"] for r in valid]
    assert len(ids) == len(set(ids)), "duplicates in the output"
    assert set(ids) == expected_valid
    assert len(dead) == len(bad_at)
    for record in dead:
        letter = json.loads(record.value)
        assert letter["topic"] == source
        assert expected_reason[letter["payload"]] in letter["reason"]
    assert {json.loads(r.value)["payload"] for r in dead} == set(expected_reason)


def test_tombstones_and_bytes_that_are_not_utf8_are_dead_lettered_whole(
    kafka, topic_name, tmp_path
):
    import base64

    docs = [doc for doc, _ in CtrStream(CtrSettings(events=50, seed=3)).events()]
    not_utf8 = b'{"event_id": "\xc3\x28", "ts": 1, "label": 1, "features": {}}'
    records = [(d["event_id"].encode(), encode(d)) for d in docs]
    records[10:10] = [(b"tombstone", None)]
    records[20:20] = [(b"bytes", not_utf8)]
    source, out, dlq = topic_name, f"{topic_name}-valid", f"{topic_name}-dlq"
    create_topics(kafka, [source], partitions=1)
    ends = produce(kafka, source, records)
    result = streamshard(
        "validate", "--bootstrap-servers", kafka.bootstrap_servers, "--input-topic", source,
        "--output-topic", out, "--dead-letter-topic", dlq, "--stop-at-offsets", f"0={ends[0]}",
        "--checkpoint-dir", f"file://{tmp_path}/ckpt", "--flink-option",
        "restart-strategy.type=none", timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(f"50 valid to {out}, 2 to {dlq}"), result.stdout
    valid = read_records(kafka, out, count=51, timeout=5)
    assert {json.loads(r.value)["event_id"] for r in valid} == {d["event_id"] for d in docs}
    letters = {json.loads(r.value)["offset"]: json.loads(r.value)
               for r in read_records(kafka, dlq, count=3, timeout=5)}  # fmt: skip
    assert set(letters) == {10, 20}
    assert letters[10]["payload"] is None and "tombstone" in letters[10]["reason"]
    assert base64.b64decode(letters[20]["payload_base64"]) == not_utf8
    assert letters[20]["partition"] == 0 and "utf-8" in letters[20]["reason"]
