# Every target bootstraps .venv: it is (re)built only when missing or older than pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast test-kafka test-flink bench bench-serve lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/streamshard demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not kafka and not flink and not cluster and not slow"

test-kafka: $(STAMP)
	$(BIN)/python -m pytest -m kafka

test-flink: $(STAMP)
	$(BIN)/python -m pytest -m flink

$(VENV)/.bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	@touch $@

# ARGS=--quick for a smaller run
bench: $(VENV)/.bench
	$(BIN)/python benchmarks/run.py $(ARGS)

bench-serve: $(STAMP)
	$(BIN)/python benchmarks/serve_bench.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .streamshard .pytest_cache
