"""Shared fixtures: one embedded broker per test session, a uniquely named topic per test."""

from __future__ import annotations

import uuid

import pytest

from connectors.broker import EmbeddedBroker
from connectors.config import KafkaConfig


@pytest.fixture(scope="session")
def broker():
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture(scope="session")
def kafka(broker) -> KafkaConfig:
    return KafkaConfig(broker.bootstrap_servers)


@pytest.fixture
def topic_name(kafka, request):
    """A fresh topic name for this test; the topics made under it are deleted afterwards."""
    from connectors.admin import delete_topics, list_topics

    base = f"t-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")
    yield base
    delete_topics(kafka, [t for t in list_topics(kafka) if t.startswith(base)])
