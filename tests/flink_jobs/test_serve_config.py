"""``ServeConfig`` checks itself however it is made: no JVM, no broker."""

import pytest

from connectors.config import KafkaConfig
from connectors.errors import ConfigError
from flink_jobs.serve import ServeConfig


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"bits": 40}, "hash bits must be an integer in"),  # 2**40 floats never allocated
        ({"replicas": 0}, "--replicas must be >= 1, got 0"),
        ({"max_pending": 0}, "--max-pending must be >= 1"),
        ({"ingest_window_ms": 0}, "--ingest-window must be >= 1 ms"),
        ({"max_wait_ms": 0}, "--max-request-age and --max-wait must be > 0 s"),
        ({"delivery": "twice"}, "--delivery must be one of"),
        ({"max_events": 0}, "--max-events must be >= 1"),
    ],
)
def test_a_serve_config_made_in_code_is_checked_as_the_flags_are(fields, message):
    with pytest.raises(ConfigError, match=message):
        ServeConfig(KafkaConfig("h:1"), **fields)
    assert ServeConfig(KafkaConfig("h:1")).bits == 20
