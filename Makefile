# The two commands a fresh machine needs: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit pg-server bench bench-auto bench-throttle bench-sinks bench-sharded soak clean

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

unit: $(STAMP) pg-server
	$(VENV)/bin/pytest

# The PostgreSQL sink's tests start a throwaway server (tests/pg_server.py): Debian's package.
pg-server:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  [ "$$(id -u)" = 0 ] || { echo "the tests need PostgreSQL: sudo apt-get install -y postgresql" >&2; exit 1; }; \
	  echo "installing PostgreSQL (Debian's postgresql package) for the tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }

## bench: streampage against the gather pattern, threads and a hand-written loop (minutes);
## then the chart of its results, benchmarks/results/bench.png
bench: $(STAMP)
	$(PY) benchmarks/bench.py
	$(PY) benchmarks/chart.py

## bench-chart: redraw benchmarks/results/bench.png from the last make bench results (seconds)
.PHONY: bench-chart
bench-chart: $(STAMP)
	$(PY) benchmarks/chart.py

## bench-auto: pages=auto on a DRF-style API, against PageNumber and a next-link walk (~3-5 min)
bench-auto: $(STAMP)
	$(PY) benchmarks/auto_fanout.py

## bench-throttle: defaults against 429 above 8 in flight, against hand-written pools (~1 min)
bench-throttle: $(STAMP)
	$(PY) benchmarks/throttle.py

## bench-sinks: appending 1,000 rows to outputs of 10^4 and 10^6 rows, per sink; CLI resume (~5 min)
bench-sinks: $(STAMP) pg-server
	$(PY) benchmarks/sinks_append.py

## bench-sink-rate: into() each sink against the same stream with no sink, 10^4 pages, 5 rounds,
## and where each sink's time goes (cProfile, loop thread and worker threads) (~4 min)
.PHONY: bench-sink-rate
bench-sink-rate: $(STAMP) pg-server
	$(PY) benchmarks/sinks_rate.py

## bench-sharded: run_sharded on a LocalCluster of 1 and 4 workers at 100 ms; shard costs (~6 min)
bench-sharded: $(STAMP)
	$(PY) benchmarks/sharded.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache benchmarks/.work

## soak: SIGKILL-and-resume many more times than make test does (several minutes)
soak: $(STAMP) pg-server
	STREAMPAGE_SOAK=30 $(VENV)/bin/pytest -q -k sigkill tests/test_crash_resume.py
