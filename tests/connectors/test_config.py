import pytest

from connectors.config import KafkaConfig, parse_properties
from connectors.errors import ConfigError

SECRET = "s3cr3t-Pa55"


def test_repr_and_str_redact_every_secret():
    cfg = KafkaConfig(
        "k1:9092,k2:9092",
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "sasl.password": SECRET,
            "sasl.jaas.config": f'PlainLoginModule required username="u" password="{SECRET}";',
            "ssl.key.password": SECRET,
        },
    )
    for text in (repr(cfg), str(cfg), f"{cfg}", str(cfg.redacted_properties())):
        assert SECRET not in text
    assert "SASL_SSL" in repr(cfg)


def test_secrets_still_reach_the_clients():
    jaas = f'PlainLoginModule required username="alice" password="{SECRET}";'
    cfg = KafkaConfig("k1:9092", {"sasl.jaas.config": jaas, "security.protocol": "SASL_SSL"})
    kwargs = cfg.kafka_python_kwargs()
    assert kwargs["sasl_plain_username"] == "alice"
    assert kwargs["sasl_plain_password"] == SECRET
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert cfg.java_properties()["sasl.jaas.config"] == jaas


def test_precedence_file_then_env_then_flags(tmp_path):
    props = tmp_path / "client.properties"
    props.write_text("# comment\nbootstrap.servers=file:1\nclient.id = from-file\nacks: all\n")
    cfg = KafkaConfig.from_sources(None, str(props), {}, environ={})
    assert cfg.bootstrap_servers == "file:1"
    assert cfg.properties == {"client.id": "from-file", "acks": "all"}
    cfg = KafkaConfig.from_sources(None, str(props), {}, environ={"STREAMSHARD_BOOTSTRAP": "env:2"})
    assert cfg.bootstrap_servers == "env:2"
    cfg = KafkaConfig.from_sources("flag:3", str(props), {"client.id": "flag"}, environ={})
    assert cfg.bootstrap_servers == "flag:3" and cfg.properties["client.id"] == "flag"


def test_bad_inputs_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="host:port"):
        KafkaConfig("nohostport")
    with pytest.raises(ConfigError, match="cannot read properties file"):
        KafkaConfig.from_sources(None, str(tmp_path / "missing"), {}, environ={})
    with pytest.raises(ConfigError, match=":2: expected 'name=value'"):
        parse_properties("a=1\njunk\n", "f")


def test_config_is_immutable():
    cfg = KafkaConfig("k:1", {"a": "b"})
    with pytest.raises(TypeError):
        cfg.properties["a"] = "c"


def test_an_inline_key_is_a_secret_but_its_location_is_not():
    pem = "-----BEGIN PRIVATE KEY-----MIIEv" + SECRET
    cfg = KafkaConfig("k:1", {"ssl.keystore.key": pem, "ssl.keystore.location": "/etc/ks.jks"})
    assert SECRET not in repr(cfg)
    assert "/etc/ks.jks" in repr(cfg)


@pytest.mark.parametrize("protocol", ["NOPE", "ssl_plaintext", ""])
def test_an_unknown_security_protocol_is_refused(protocol):
    with pytest.raises(ConfigError, match="security.protocol must be one of"):
        KafkaConfig("k:1", {"security.protocol": protocol})


def test_every_kafka_security_protocol_is_accepted():
    for protocol in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL", "sasl_ssl"):
        KafkaConfig("k:1", {"security.protocol": protocol})


def test_a_binary_properties_file_is_one_config_error(tmp_path):
    props = tmp_path / "garbage.properties"
    props.write_bytes(b"a=1\n\xff\xfe\x00\x9c junk\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        KafkaConfig.from_sources(None, str(props), {}, environ={})
