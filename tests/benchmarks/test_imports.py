"""Every benchmark script imports: a function moved in the package otherwise breaks
``make bench`` or ``make bench-serve`` only when they run (no runs here)."""

import importlib
from pathlib import Path

import pytest

SCRIPTS = sorted(p.stem for p in (Path(__file__).parents[2] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("name", [s for s in SCRIPTS if s != "__init__"])
def test_the_benchmark_script_imports(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.__doc__, f"benchmarks/{name}.py says what it measures"
