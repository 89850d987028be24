"""``streamshard train`` flags to config: no JVM, no broker."""

import argparse

import pytest

from flink_jobs import train

SEGMENT = "taskmanager.memory.segment-size"


def _config(*argv):
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return train.config_from_args(parser.parse_args(["--bootstrap-servers", "h:1", *argv]))


def test_small_network_buffers_by_default_and_the_users_choice_wins():
    assert dict(_config().flink.options)[SEGMENT] == "8kb"
    mine = _config("--flink-option", f"{SEGMENT}=32kb", "--flink-option", "a.b=c").flink.options
    assert dict(mine) == {SEGMENT: "32kb", "a.b": "c"}


def test_ingest_window_reaches_the_config():
    assert _config().ingest_window_ms == 50
    assert _config("--ingest-window", "20").ingest_window_ms == 20


def test_max_in_flight_reaches_the_workers_settings():
    assert _config().ps_settings().max_in_flight == 16
    assert _config("--max-in-flight", "8").ps_settings().max_in_flight == 8


def test_task_limits_are_checked():
    from connectors.errors import ConfigError
    from flink_jobs.options import task_limits

    assert task_limits("a,b,a", None) == (("a", "b"), 2)
    assert task_limits(None, 3) == (None, 3)
    for tasks, limit in (("../x", None), ("a,b,c", 2), (None, 0), (",", None)):
        with pytest.raises(ConfigError):
            task_limits(tasks, limit)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"shards": 0}, "--shards must be >= 1, got 0"),
        ({"block": 0}, "--block-size must be >= 1"),
        ({"bits": 40}, "hash bits must be an integer in"),
        ({"delivery": "maybe"}, "--delivery must be one of"),
        ({"consistency": "bounded:x"}, "bounded"),
        ({"hyper": {"alpha": -1.0}}, "alpha"),
        ({"input_format": "ndjson", "max_events": 10}, "--stop-at-offsets instead"),
        ({"batch_timeout_ms": -1}, "--batch-timeout"),
    ],
)
def test_a_config_made_in_code_is_checked_as_the_flags_are(fields, message):
    from connectors.config import KafkaConfig
    from connectors.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        train.TrainConfig(KafkaConfig("h:1"), **fields)
    assert train.TrainConfig(KafkaConfig("h:1")).shards == 4
