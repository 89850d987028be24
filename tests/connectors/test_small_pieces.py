import json

import pytest

from connectors.deadletter import dead_letter
from connectors.errors import ConfigError
from connectors.flink_kafka import parse_offsets


def test_dead_letter_keeps_payload_and_reason():
    doc = json.loads(dead_letter(b"\xff{bad", "invalid JSON", "events", 1, 42, now_ms=7))
    assert doc == {
        "reason": "invalid JSON",
        "step": "decode",
        "topic": "events",
        "partition": 1,
        "offset": 42,
        "time": 7,
        "payload": "\\xff{bad",
        "run": None,
        "payload_base64": "/3tiYWQ=",  # the exact bytes, since they are not UTF-8
    }


def test_parse_offsets():
    assert parse_offsets("0=500, 1=480") == {0: 500, 1: 480}
    for bad in ("", "0:5", "a=1", "0=-1"):
        with pytest.raises(ConfigError):
            parse_offsets(bad)
