"""Kafka connection settings: bootstrap servers and client properties, secrets redacted.

Settings come, lowest precedence first, from a Java-style properties file, the environment
(``STREAMSHARD_BOOTSTRAP``) and flags. Property names are Kafka's own (``security.protocol``,
``sasl.mechanism``, ``sasl.jaas.config``, ``ssl.truststore.location`` ...), so one config feeds
both Flink's Java connector and kafka-python (see :meth:`KafkaConfig.kafka_python_kwargs`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from connectors.errors import ConfigError

BOOTSTRAP_ENV = "STREAMSHARD_BOOTSTRAP"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
REDACTED = "***"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SECRET_MARKERS = ("password", "secret", "jaas", "token", "key.password", "credentials")

# Kafka (Java) property name -> kafka-python keyword argument.
_KAFKA_PYTHON_NAMES = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_password",
    "ssl.endpoint.identification.algorithm": "ssl_check_hostname",
    "client.id": "client_id",
}


def is_secret(name: str) -> bool:
    """Whether a property's value must never be printed."""
    lowered = name.lower()
    if lowered.endswith(".key") or lowered.endswith(".keys"):  # an inline PEM key, not a path
        return True
    return any(marker in lowered for marker in _SECRET_MARKERS)


def parse_properties(text: str, source: str = "<properties>") -> dict[str, str]:
    """Parse Java-style ``key=value`` lines (``#``/``!`` comments, ``:`` also separates)."""
    props: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if cut <= 0:
            raise ConfigError(f"{source}:{number}: expected 'name=value', got {raw.strip()!r}")
        props[line[:cut].strip()] = line[cut + 1 :].strip()
    return props


@dataclass(frozen=True)
class KafkaConfig:
    """Where Kafka is and how to talk to it.

    Examples
    --------
    >>> cfg = KafkaConfig("k1:9092", {"sasl.password": "hunter2", "security.protocol": "SASL_SSL"})
    >>> "hunter2" in repr(cfg)
    False
    >>> cfg.kafka_python_kwargs()["sasl_plain_password"]
    'hunter2'
    """

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.bootstrap_servers or not all(
            ":" in part for part in self.bootstrap_servers.split(",")
        ):
            raise ConfigError(
                "bootstrap servers must be host:port[,host:port...], "
                f"got {self.bootstrap_servers!r}"
            )
        protocol = self.properties.get("security.protocol")
        if protocol is not None and protocol.upper() not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"security.protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                f"got {protocol!r}"
            )
        object.__setattr__(self, "properties", MappingProxyType(dict(self.properties)))

    @property
    def uses_tls(self) -> bool:
        return self.properties.get("security.protocol", "").upper() in ("SSL", "SASL_SSL")

    @classmethod
    def from_sources(
        cls,
        bootstrap_servers: str | None = None,
        properties_file: str | None = None,
        overrides: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> KafkaConfig:
        """Merge file < environment < flags, the usual precedence."""
        environ = os.environ if environ is None else environ
        props: dict[str, str] = {}
        if properties_file:
            path = Path(properties_file)
            try:
                props.update(parse_properties(path.read_text(encoding="utf-8"), str(path)))
            except OSError as exc:
                raise ConfigError(f"cannot read properties file {path}: {exc.strerror}") from exc
            except UnicodeDecodeError as exc:
                raise ConfigError(
                    f"properties file {path} is not UTF-8 text (byte {exc.start}: "
                    f"{exc.object[exc.start : exc.start + 1]!r})"
                ) from None
        props.update(overrides or {})
        bootstrap = (
            bootstrap_servers
            or environ.get(BOOTSTRAP_ENV)
            or props.pop("bootstrap.servers", None)
            or DEFAULT_BOOTSTRAP
        )
        props.pop("bootstrap.servers", None)
        return cls(bootstrap, props)

    def redacted_properties(self) -> dict[str, str]:
        return {k: (REDACTED if is_secret(k) else v) for k, v in self.properties.items()}

    def __repr__(self) -> str:
        return (
            f"KafkaConfig(bootstrap_servers={self.bootstrap_servers!r}, "
            f"properties={self.redacted_properties()!r})"
        )

    __str__ = __repr__

    def java_properties(self) -> dict[str, str]:
        """Properties for Flink's Kafka connector (Java client names), bootstrap included."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.properties}

    def librdkafka_config(self) -> dict[str, str]:
        """Configuration for confluent-kafka (librdkafka) clients: the properties
        :meth:`kafka_python_kwargs` knows, whose names are librdkafka's too.

        >>> KafkaConfig("b:9092", {"security.protocol": "SASL_SSL", "sasl.jaas.config":
        ...     'x username="u" password="p";', "linger.ms": "3"}).librdkafka_config()
        {'bootstrap.servers': 'b:9092', 'security.protocol': 'SASL_SSL', 'sasl.username': 'u', \
'sasl.password': 'p'}
        """
        conf = {"bootstrap.servers": self.bootstrap_servers}
        conf.update({k: v for k, v in self.properties.items() if k in _KAFKA_PYTHON_NAMES})
        for key, value in self._jaas_credentials().items():
            conf.setdefault(f"sasl.{key}", value)
        return conf

    def _jaas_credentials(self) -> dict[str, str]:
        """``username`` and ``password`` of ``sasl.jaas.config``, those it names."""
        jaas = self.properties.get("sasl.jaas.config", "")
        found = {}
        for key in ("username", "password"):
            marker = f'{key}="'
            if marker in jaas:
                found[key] = jaas.split(marker, 1)[1].split('"', 1)[0]
        return found

    def kafka_python_kwargs(self) -> dict[str, object]:
        """Keyword arguments for kafka-python clients; unknown Java-only names are left out."""
        kwargs: dict[str, object] = {"bootstrap_servers": self.bootstrap_servers.split(",")}
        for name, value in self.properties.items():
            target = _KAFKA_PYTHON_NAMES.get(name)
            if target == "ssl_check_hostname":
                kwargs[target] = value.lower() == "https"
            elif target:
                kwargs[target] = value
        for key, value in self._jaas_credentials().items():
            kwargs.setdefault(f"sasl_plain_{key}", value)
        return kwargs
