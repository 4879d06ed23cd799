#!/usr/bin/env bash
# The main job, with its own set-up: environment, toy data, train, test (training form vs fused),
# fused checkpoint, predictions picture. See tools/demo.py.
#   bash tools/run_demo.sh [demo.py args...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
exec .venv/bin/python tools/demo.py "$@"
