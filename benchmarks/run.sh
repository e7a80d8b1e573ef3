#!/usr/bin/env bash
# The benchmark in one command: benchmarks/run.sh [--quick] [--rounds N] [--sizes 1000,10000]
# Installs nginx if missing (Debian, as root), starts it, runs every client, prints the tables
# and writes benchmarks/results/latest.json and latest.md. All options: run.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" benchmarks/bench.py "$@"
