"""The packages import downwards only: connectors (Kafka, codecs) ← operators (the model and its
Flink adapters) ← flink_jobs (jobs and the CLI); no job module imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BELOW = {"connectors": set(), "operators": {"connectors"},
         "flink_jobs": {"connectors", "operators"}}  # fmt: skip


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("package", sorted(BELOW))
def test_a_package_imports_only_the_packages_below_it(package):
    upward = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).glob("*.py"))
        for name in imported(path)
        if name.split(".")[0] in set(BELOW) - BELOW[package] - {package}
    }
    assert not upward


def test_no_job_module_imports_the_cli():
    jobs = ("train", "serve", "validate", "generate")
    found = [job for job in jobs if "flink_jobs.cli" in imported(ROOT / "flink_jobs" / f"{job}.py")]
    assert not found


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from operators.ps import Replica\n")
    assert "operators.ps" in imported(module)
