#!/usr/bin/env bash
# The test suite, with its own set-up: environment (tools/setup_env.sh), then pytest.
#   bash tools/run_tests.sh [pytest args...]
# Runs on every core with pytest-xdist (PYTEST_WORKERS, default: the number of cores), one torch
# thread per worker (two torch processes with two threads each thrash a 2-core machine); a test
# file stays on one worker (--dist loadfile), so its module fixtures are built once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
# workers counted before OMP_NUM_THREADS is set: GNU nproc honours it (it would say 1)
WORKERS="${PYTEST_WORKERS:-$(nproc)}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -q -n "$WORKERS" --dist loadfile "$@" tests
