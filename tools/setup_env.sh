#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with the pinned mm stack.
#
#   bash tools/setup_env.sh          # idempotent: a second run takes seconds
#   bash tools/setup_env.sh --plan   # print how mmcv would be built (CPU or CUDA ops, toolkit, archs); change nothing
#   bash tools/setup_env.sh --wheel  # only build the mmcv wheel of that plan into the cache (needs .venv with torch)
#
# Steps (each skipped when already done):
#   1. python3.11 -m venv .venv
#   2. pip install the pins in requirements/runtime.txt, constrained by requirements/lock.txt
#      (every transitive package pinned too)
#   3. mmcv 2.1.0 with its compiled ops, built once from the PyPI sdist and kept as a wheel in
#      $REP_BACKBONES_CACHE (default ~/.cache/rep_backbones), so later runs and fresh clones reuse it.
#      CPU ops by default; CUDA ops too when a GPU is visible or REP_BACKBONES_MMCV_CUDA=1 (toolkit and
#      architectures: tools/cuda_env.sh, docs/gpu.md). A CUDA toolkit without a GPU keeps the CPU build.
#      The sdist needs two visible fixes for torch 2.14 (tools/patches/mmcv-2.1.0-torch2.14.patch):
#      C++20 instead of C++17 (torch 2.14's headers need it), and the build runs without isolation
#      because setup.py imports torch. The CUDA build also gives nvcc C++20
#      (tools/patches/mmcv-2.1.0-cuda-torch2.14.patch).
#   4. pip install -e . (the package, its .mim folder of configs and tools)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
CACHE="${REP_BACKBONES_CACHE:-$HOME/.cache/rep_backbones}"
MMCV_VERSION=2.1.0
PY="${PYTHON:-python3.11}"
STAMP="$VENV/.rep_backbones_env"
MODE=install
case "${1:-}" in
  "") ;;
  --plan) MODE=plan ;;
  --wheel) MODE=wheel ;;
  *) echo "usage: bash tools/setup_env.sh [--plan | --wheel]" >&2; exit 2 ;;
esac

# shellcheck source=tools/cuda_env.sh
source "$ROOT/tools/cuda_env.sh"
mmcv_plan || exit 1
# the stamp names the mmcv variant too: switching between CPU and CUDA ops reinstalls
WANT="$(cat requirements/*.txt tools/patches/*.patch tools/setup_env.sh tools/cuda_env.sh setup.py pyproject.toml \
  rep_backbones/version.py | sha256sum | cut -d' ' -f1) $MMCV_VARIANT"

if [[ "$MODE" == plan ]]; then
  mmcv_print_plan
  echo "stamp=$WANT"
  exit 0
fi
if [[ -n "$MMCV_NOTE" ]]; then echo "[setup_env] $MMCV_NOTE"; fi
if [[ "$MODE" == install && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "[setup_env] .venv is up to date"
  exit 0
fi

log() { echo "[setup_env $(date +%H:%M:%S)] $*"; }

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
export PIP_CONSTRAINT="$ROOT/requirements/lock.txt"
if [[ "$MODE" == wheel ]]; then
  "$VENV/bin/python" -c 'import torch' 2>/dev/null \
    || { echo "[setup_env] --wheel needs .venv with torch: run bash tools/setup_env.sh first" >&2; exit 1; }
else
  [[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
  log "installing pinned packages"
  "${PIP[@]}" install -q setuptools==80.9.0 wheel==0.45.1
  "${PIP[@]}" install -q -r requirements/runtime.txt
fi

# Builds the mmcv wheel of the plan into $MMCV_WHEEL_DIR (written under a temporary name, then renamed:
# an interrupted build leaves nothing in the cache).
build_mmcv_wheel() {
  local build patches=(tools/patches/mmcv-2.1.0-torch2.14.patch) env=("${MMCV_BUILD_ENV[@]}")
  build="$(mktemp -d)"
  if [[ "$MMCV_VARIANT" == cpu ]]; then
    log "building mmcv ${MMCV_VERSION} with CPU ops (about 8-10 minutes on 2 cores; done once per machine)"
  else
    log "building mmcv ${MMCV_VERSION} with CUDA ops: CUDA $CUDA_TOOLKIT_VERSION ($CUDA_TOOLKIT toolkit," \
      "$CUDA_TOOLKIT_HOME), TORCH_CUDA_ARCH_LIST=$CUDA_ARCHS ($CUDA_ARCHS_SOURCE). Done once per variant;" \
      "136 files, much longer than the CPU build (docs/gpu.md); MAX_JOBS=N runs N compilers at once"
    patches+=(tools/patches/mmcv-2.1.0-cuda-torch2.14.patch)
    local torch_cuda
    torch_cuda="$("$VENV/bin/python" -c 'import torch; print(torch.version.cuda or "")')"
    if [[ -z "$torch_cuda" ]]; then
      echo "[setup_env] torch in .venv is a CPU-only build: mmcv's CUDA ops need torch built with CUDA" >&2
      exit 1
    fi
    if [[ "${torch_cuda%%.*}" != "${CUDA_TOOLKIT_VERSION%%.*}" ]]; then
      echo "[setup_env] the CUDA toolkit at $CUDA_TOOLKIT_HOME is CUDA $CUDA_TOOLKIT_VERSION, torch was built with" \
        "CUDA $torch_cuda: set CUDA_HOME to a CUDA ${torch_cuda%%.*} toolkit, or REP_BACKBONES_CUDA_TOOLKIT=pypi" >&2
      exit 1
    fi
    # the extension links -lcudart; the PyPI runtime ships libcudart.so.13 only
    if [[ ! -e "$CUDA_TOOLKIT_HOME/lib64/libcudart.so" && ! -e "$CUDA_TOOLKIT_HOME/lib/libcudart.so" ]]; then
      local cudart
      cudart="$(ls "$CUDA_TOOLKIT_HOME"/lib*/libcudart.so.* 2>/dev/null | head -n1 || true)"
      if [[ -z "$cudart" ]]; then
        echo "[setup_env] no libcudart.so in $CUDA_TOOLKIT_HOME/lib64 or lib: not a complete CUDA toolkit" >&2
        exit 1
      fi
      mkdir -p "$build/lib"
      ln -s "$cudart" "$build/lib/libcudart.so"
      env+=("LIBRARY_PATH=$build/lib${LIBRARY_PATH:+:$LIBRARY_PATH}")
    fi
  fi
  # --no-build-isolation: mmcv's setup.py imports torch and pkg_resources from this venv.
  "${PIP[@]}" download -q --no-deps --no-binary mmcv --no-build-isolation "mmcv==${MMCV_VERSION}" -d "$build"
  tar -xzf "$build/mmcv-${MMCV_VERSION}.tar.gz" -C "$build"
  local p
  for p in "${patches[@]}"; do patch -d "$build/mmcv-${MMCV_VERSION}" -p1 < "$p"; done
  env "${env[@]}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "${PIP[@]}" wheel -q --no-deps --no-build-isolation "$build/mmcv-${MMCV_VERSION}" -w "$build/dist"
  mkdir -p "$MMCV_WHEEL_DIR"
  local wheel
  wheel="$(basename "$(ls "$build"/dist/mmcv-${MMCV_VERSION}-*.whl)")"
  cp "$build/dist/$wheel" "$MMCV_WHEEL_DIR/.$wheel.partial"
  mv "$MMCV_WHEEL_DIR/.$wheel.partial" "$MMCV_WHEEL_DIR/$wheel"
  rm -rf "$build"
}

if [[ "$MMCV_VARIANT" != cpu && "$CUDA_TOOLKIT" == pypi ]]; then
  log "installing the CUDA toolkit from PyPI (requirements/cuda-build.txt)"
  "${PIP[@]}" install -q -r requirements/cuda-build.txt
fi
mkdir -p "$MMCV_WHEEL_DIR"
MMCV_WHEEL="$(ls "$MMCV_WHEEL_DIR"/mmcv-${MMCV_VERSION}-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$MMCV_WHEEL" ]]; then
  build_mmcv_wheel
  MMCV_WHEEL="$(ls "$MMCV_WHEEL_DIR"/mmcv-${MMCV_VERSION}-*.whl | head -n1)"
fi
if [[ "$MODE" == wheel ]]; then
  log "mmcv wheel ($MMCV_VARIANT): $MMCV_WHEEL"
  exit 0
fi
log "installing $(basename "$MMCV_WHEEL") ($MMCV_VARIANT)"
"${PIP[@]}" install -q --no-deps --force-reinstall "$MMCV_WHEEL"
# mmcv's own runtime requirements (its wheel was installed with --no-deps).
"${PIP[@]}" install -q addict packaging Pillow pyyaml yapf opencv-python
# Deployment (docs/deploy.md): openvino, nncf and mmdeploy with --no-deps: mmdeploy's wheel declares
# protobuf<=3.20.2, which would downgrade the protobuf that onnx needs, and nncf declares scikit-learn and ninja,
# which its OpenVINO path does not import; requirements/deploy.txt pins what they import instead.
"${PIP[@]}" install -q --no-deps -r requirements/deploy.txt

log "installing rep_backbones (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e .

MMCV_VARIANT="$MMCV_VARIANT" "$VENV/bin/python" - <<'EOF'
import os
import mmcv, mmdet, mmseg, mmengine, timm, torch
from mmcv.ops import get_compiling_cuda_version, nms, roi_align  # compiled ops must load
import nncf, openvino, onnxruntime  # the deploy runtimes and quantizers (requirements/deploy.txt)
import rep_backbones
if os.environ['MMCV_VARIANT'] != 'cpu' and get_compiling_cuda_version() == 'not available':
    raise SystemExit(f"[setup_env] the installed mmcv has no CUDA ops, expected {os.environ['MMCV_VARIANT']}")
print(f"[setup_env] torch {torch.__version__}, mmcv {mmcv.__version__} (ops ok, CUDA ops: "
      f"{get_compiling_cuda_version()}), mmengine {mmengine.__version__}, "
      f"mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, timm {timm.__version__}")
EOF
echo "$WANT" > "$STAMP"
log "done"
