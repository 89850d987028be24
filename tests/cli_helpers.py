"""Run the real ``streamshard`` console script, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCRIPT = str(Path(sys.executable).with_name("streamshard"))


def streamshard(
    *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


@contextmanager
def standalone_cluster(home: Path, rest_port: int, taskmanagers: int = 2) -> Iterator[dict]:
    """A local standalone cluster under ``home`` for the block; yields the env naming it."""
    env = {"STREAMSHARD_HOME": str(home)}
    out = streamshard(
        "cluster", "start", "--taskmanagers", str(taskmanagers), "--rest-port", str(rest_port),
        env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    try:
        yield env
    finally:
        streamshard("cluster", "stop", env=env)
