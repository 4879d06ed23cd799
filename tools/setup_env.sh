#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with the pinned mm stack.
#
#   bash tools/setup_env.sh          # idempotent: a second run takes seconds
#
# Steps (each skipped when already done):
#   1. python3.11 -m venv .venv
#   2. pip install the pins in requirements/runtime.txt, constrained by requirements/lock.txt
#      (every transitive package pinned too)
#   3. mmcv 2.1.0 with its compiled CPU ops, built once from the PyPI sdist and kept as a wheel in
#      $REP_BACKBONES_CACHE (default ~/.cache/rep_backbones), so later runs and fresh clones reuse it.
#      The sdist needs two visible fixes for torch 2.14 (tools/patches/mmcv-2.1.0-torch2.14.patch):
#      C++20 instead of C++17 (torch 2.14's headers need it), and the build runs without isolation
#      because setup.py imports torch.
#   4. pip install -e . (the package, its .mim folder of configs and tools)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
CACHE="${REP_BACKBONES_CACHE:-$HOME/.cache/rep_backbones}"
MMCV_VERSION=2.1.0
PY="${PYTHON:-python3.11}"
STAMP="$VENV/.rep_backbones_env"
WANT="$(cat requirements/*.txt tools/patches/*.patch tools/setup_env.sh setup.py pyproject.toml rep_backbones/version.py | sha256sum | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "[setup_env] .venv is up to date"
  exit 0
fi

log() { echo "[setup_env $(date +%H:%M:%S)] $*"; }

[[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
export PIP_CONSTRAINT="$ROOT/requirements/lock.txt"

log "installing pinned packages"
"${PIP[@]}" install -q setuptools==80.9.0 wheel==0.45.1
"${PIP[@]}" install -q -r requirements/runtime.txt

mkdir -p "$CACHE/wheels"
MMCV_WHEEL="$(ls "$CACHE"/wheels/mmcv-${MMCV_VERSION}-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$MMCV_WHEEL" ]]; then
  log "building mmcv ${MMCV_VERSION} with CPU ops (about 8-10 minutes on 2 cores; done once per machine)"
  BUILD="$(mktemp -d)"
  # --no-build-isolation: mmcv's setup.py imports torch and pkg_resources from this venv.
  "${PIP[@]}" download -q --no-deps --no-binary mmcv --no-build-isolation "mmcv==${MMCV_VERSION}" -d "$BUILD"
  tar -xzf "$BUILD/mmcv-${MMCV_VERSION}.tar.gz" -C "$BUILD"
  patch -d "$BUILD/mmcv-${MMCV_VERSION}" -p1 < tools/patches/mmcv-2.1.0-torch2.14.patch
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="$(nproc)" \
    "${PIP[@]}" wheel -q --no-deps --no-build-isolation "$BUILD/mmcv-${MMCV_VERSION}" -w "$CACHE/wheels"
  rm -rf "$BUILD"
  MMCV_WHEEL="$(ls "$CACHE"/wheels/mmcv-${MMCV_VERSION}-*.whl | head -n1)"
fi
log "installing $(basename "$MMCV_WHEEL")"
"${PIP[@]}" install -q --no-deps --force-reinstall "$MMCV_WHEEL"
# mmcv's own runtime requirements (its wheel was installed with --no-deps).
"${PIP[@]}" install -q addict packaging Pillow pyyaml yapf opencv-python
# mmdeploy (whole-model ONNX export, docs/deploy.md) with --no-deps: its wheel declares protobuf<=3.20.2, which
# would downgrade the protobuf that onnx needs; requirements/deploy.txt pins what it imports instead.
"${PIP[@]}" install -q --no-deps -r requirements/deploy.txt

log "installing rep_backbones (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e .

"$VENV/bin/python" - <<'EOF'
import mmcv, mmdet, mmseg, mmengine, timm, torch
from mmcv.ops import nms, roi_align  # compiled ops must load
import rep_backbones
print(f"[setup_env] torch {torch.__version__}, mmcv {mmcv.__version__} (ops ok), mmengine {mmengine.__version__}, "
      f"mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, timm {timm.__version__}")
EOF
echo "$WANT" > "$STAMP"
log "done"
