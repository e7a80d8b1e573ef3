# The two commands a fresh machine needs: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,cli,speed,bench]'
	touch $(STAMP)

## demo: start the embedded demo API and stream every page of it
demo: $(STAMP)
	$(PY) -m streampage demo

## test: lint, type-check (strict) and run every test
test: lint typecheck unit

lint: $(STAMP)
	$(VENV)/bin/ruff check streampage tests benchmarks examples
	$(VENV)/bin/ruff format --check streampage tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest

## bench: streampage against the gather pattern, threads and a hand-written loop (minutes)
bench: $(STAMP)
	$(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache benchmarks/.work
