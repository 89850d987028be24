"""The examples in the library's docstrings run as tests."""

import doctest
import importlib
import pkgutil

import pytest

import connectors
import flink_jobs
import operators

MODULES = sorted(
    info.name
    for package in (connectors, operators, flink_jobs)
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + ".")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"
