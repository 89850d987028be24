"""``ServeConfig`` checks itself however it is made: no JVM, no broker."""

import pytest

from connectors.config import KafkaConfig
from connectors.errors import ConfigError
from flink_jobs.serve import ServeConfig


def _made_in_code(**fields):
    from operators.settings import Bounds, ServingSettings

    parts = {"serving": ServingSettings, "bounds": Bounds}
    made = {name: cls(**fields.pop(name)) for name, cls in parts.items() if name in fields}
    return ServeConfig(KafkaConfig("h:1"), **made, **fields)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"serving": {"bits": 40}}, "hash bits must be an integer in"),  # 2**40 never allocated
        ({"serving": {"replicas": 0}}, "--replicas must be >= 1, got 0"),
        ({"serving": {"max_pending": 0}}, "--max-pending must be >= 1"),
        ({"ingest_window_ms": 0}, "--ingest-window must be >= 1 ms"),
        ({"serving": {"max_wait_ms": 0}}, "--max-request-age and --max-wait must be > 0 s"),
        ({"delivery": "twice"}, "--delivery must be one of"),
        ({"bounds": {"max_events": 0}}, "--max-events must be >= 1"),
    ],
)
def test_a_serve_config_made_in_code_is_checked_as_the_flags_are(fields, message):
    with pytest.raises(ConfigError, match=message):
        _made_in_code(**fields)
    assert _made_in_code().serving.bits == 20


def test_the_operators_get_the_configs_serving_settings_itself():
    import argparse

    from flink_jobs import serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    argv = ["--bootstrap-servers", "h:1", "--hash-bits", "12", "--replicas", "3", "--max-wait",
            "2", "--requests-topic", "rq"]  # fmt: skip
    cfg = serve.config_from_args(parser.parse_args(argv))
    s = cfg.serve_settings()
    assert s.serving is cfg.serving and s.requests_topic == "rq"
    assert (s.serving.bits, s.serving.replicas, s.serving.max_wait_ms) == (12, 3, 2000)
