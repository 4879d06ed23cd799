#!/usr/bin/env bash
# The test suite, with its own set-up: environment (tools/setup_env.sh), then pytest.
#   bash tools/run_tests.sh [pytest args...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec .venv/bin/python -m pytest -q "$@" tests
