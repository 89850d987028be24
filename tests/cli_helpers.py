"""Run the real ``streamshard`` console script, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = str(Path(sys.executable).with_name("streamshard"))


def streamshard(
    *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )
