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
    assert _config().ps_settings().loop.max_in_flight == 16
    assert _config("--max-in-flight", "8").ps_settings().loop.max_in_flight == 8


def test_the_operators_get_the_configs_settings_objects_themselves():
    cfg = _config("--hash-bits", "12", "--shards", "3", "--input-topic", "t")
    s = cfg.ps_settings()
    assert s.model is cfg.model and s.loop is cfg.loop and s.topics is cfg.topics
    assert (s.model.bits, s.loop.shards, s.topics.input) == (12, 3, "t")


def test_flag_defaults_are_the_settings_defaults():
    from operators.settings import Bounds, LoopSettings, ModelSettings, TrainTopics

    cfg = _config()
    assert cfg.model == ModelSettings() and cfg.topics == TrainTopics()
    assert cfg.loop == LoopSettings() and cfg.bounds == Bounds()


def test_task_limits_are_checked():
    from connectors.errors import ConfigError
    from flink_jobs.options import task_limits

    assert task_limits("a,b,a", None) == (("a", "b"), 2)
    assert task_limits(None, 3) == (None, 3)
    for tasks, limit in (("../x", None), ("a,b,c", 2), (None, 0), (",", None)):
        with pytest.raises(ConfigError):
            task_limits(tasks, limit)


def _made_in_code(**fields):
    from connectors.config import KafkaConfig
    from operators.settings import Bounds, LoopSettings, ModelSettings, TrainTopics

    parts = {"model": ModelSettings, "loop": LoopSettings, "topics": TrainTopics,
             "bounds": Bounds}  # fmt: skip
    made = {name: cls(**fields.pop(name)) for name, cls in parts.items() if name in fields}
    return train.TrainConfig(KafkaConfig("h:1"), **made, **fields)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"loop": {"shards": 0}}, "--shards must be >= 1, got 0"),
        ({"loop": {"block": 0}}, "--block-size must be >= 1"),
        ({"model": {"bits": 40}}, "hash bits must be an integer in"),
        ({"delivery": "maybe"}, "--delivery must be one of"),
        ({"loop": {"consistency": "bounded:x"}}, "bounded"),
        ({"model": {"hyper": (("alpha", -1.0),)}}, "alpha"),
        (
            {"topics": {"input_format": "ndjson"}, "bounds": {"max_events": 10}},
            "--stop-at-offsets instead",
        ),
        ({"loop": {"batch_timeout_ms": -1}}, "--batch-timeout"),
        ({"bounds": {"max_events": 0}}, "--max-events must be >= 1"),
        ({"topics": {"prediction_format": "csv"}}, "--prediction-format must be one of"),
        ({"window": 0}, "--window must be >= 1"),
    ],
)
def test_a_config_made_in_code_is_checked_as_the_flags_are(fields, message):
    from connectors.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        _made_in_code(**fields)
    assert _made_in_code().loop.shards == 4
