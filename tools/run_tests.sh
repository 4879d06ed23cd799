#!/usr/bin/env bash
# The test suite, with its own set-up: environment (tools/setup_env.sh), then pytest.
#   bash tools/run_tests.sh [pytest args...]
# Runs on every core with pytest-xdist (PYTEST_WORKERS, default: the number of cores), one torch
# thread per worker (two torch processes with two threads each thrash a 2-core machine); a test
# file stays on one worker (--dist loadfile), so its module fixtures are built once. Skipped tests are
# listed with their reasons (-rs). Under CI (CI=true, or REP_BACKBONES_REQUIRE_ALL=1 as .ci/run sets it)
# a test whose optional dependency (mmdet, mmseg, mmcv.ops, mim, ...) is missing fails instead of skipping.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
# workers counted before OMP_NUM_THREADS is set: GNU nproc honours it (it would say 1)
WORKERS="${PYTEST_WORKERS:-$(nproc)}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
if [ "${CI:-}" = true ]; then
    export REP_BACKBONES_REQUIRE_ALL=1
fi
exec .venv/bin/python -m pytest -q -rs -n "$WORKERS" --dist loadfile "$@" tests
