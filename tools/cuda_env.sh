# How tools/setup_env.sh builds mmcv's compiled ops: CPU only, or with CUDA, and with which toolkit.
# Sourced by setup_env.sh; `bash tools/setup_env.sh --plan` prints the decision and changes nothing.
#
#   REP_BACKBONES_MMCV_CUDA=1    build the CUDA ops, with or without a visible GPU (e.g. on a login node)
#   REP_BACKBONES_MMCV_CUDA=0    build the CPU ops only
#   (unset)                      CUDA ops when a GPU is visible: `nvidia-smi -L` lists one, /dev/nvidia0
#                                exists, or torch in .venv sees one. A CUDA toolkit alone does not switch.
#   REP_BACKBONES_CUDA_TOOLKIT   system | pypi. Default: the system toolkit (CUDA_HOME, else nvcc on PATH),
#                                else the PyPI toolkit pinned in requirements/cuda-build.txt (into .venv).
#   TORCH_CUDA_ARCH_LIST         GPU architectures to compile for. Default: the compute capabilities of the
#                                visible GPUs (nvidia-smi), else "8.0;9.0+PTX" (sm_80 also runs on 8.6/8.9,
#                                PTX for 9.0 is compiled for newer GPUs at load time).
#
# mmcv_plan sets: MMCV_VARIANT (cpu, or cuda<version>-arch<list>; part of the environment stamp, so a
# switch reinstalls), MMCV_REASON, MMCV_NOTE (a line for the log, or empty), MMCV_WHEEL_DIR (CPU:
# $CACHE/wheels; CUDA: a subfolder per variant, as both wheels have the same file name), MMCV_BUILD_ENV
# (NAME=value words for the build), and for CUDA: CUDA_TOOLKIT, CUDA_TOOLKIT_HOME, CUDA_TOOLKIT_VERSION,
# CUDA_ARCHS, CUDA_ARCHS_SOURCE. Needs ROOT, VENV, CACHE and PY (the interpreter that creates .venv).

CUDA_ARCHS_DEFAULT="8.0;9.0+PTX"

# The reason a GPU counts as visible, or nothing.
_visible_gpu() {
  local n
  if command -v nvidia-smi >/dev/null 2>&1; then
    n="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
    if [[ "$n" -gt 0 ]]; then echo "nvidia-smi lists $n GPU(s)"; return; fi
  fi
  if [[ -e /dev/nvidia0 ]]; then echo "/dev/nvidia0 exists"; return; fi
  if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c \
      'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    echo "torch in .venv sees a GPU"
  fi
}

# The system toolkit's root (CUDA_HOME, else the nvcc on PATH, followed through wrappers), or nothing.
_system_cuda_home() {
  if [[ -n "${CUDA_HOME:-}" ]]; then echo "$CUDA_HOME"; return; fi
  command -v nvcc >/dev/null 2>&1 || return 0
  local here
  here="$(nvcc --dryrun -v -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ _HERE_=//p' | head -n1)"
  if [[ -n "$here" ]]; then (cd "$here/.." && pwd); fi
}

_nvcc_release() {  # "13.0" from `nvcc --version`
  "$1/bin/nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9.]*\),.*/\1/p' | head -n1
}

# site-packages of .venv (it need not exist yet)
_venv_site() {
  local py="$VENV/bin/python"
  [[ -x "$py" ]] || py="$PY"
  echo "$VENV/lib/$("$py" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')/site-packages"
}

mmcv_plan() {
  local force="${REP_BACKBONES_MMCV_CUDA:-}" gpu="" sys_home
  MMCV_NOTE=""
  case "$force" in
    1) MMCV_REASON="REP_BACKBONES_MMCV_CUDA=1" ;;
    0) MMCV_REASON="REP_BACKBONES_MMCV_CUDA=0" ;;
    "") gpu="$(_visible_gpu)"; MMCV_REASON="${gpu:-no GPU visible}" ;;
    *) echo "[setup_env] REP_BACKBONES_MMCV_CUDA must be 1 (CUDA ops) or 0 (CPU ops), not '$force'" >&2
       return 1 ;;
  esac
  sys_home="$(_system_cuda_home)"
  if [[ "$force" == 0 || ( -z "$force" && -z "$gpu" ) ]]; then
    MMCV_VARIANT=cpu
    MMCV_WHEEL_DIR="$CACHE/wheels"
    MMCV_BUILD_ENV=(MMCV_WITH_OPS=1 FORCE_CUDA=0)
    if [[ -z "$force" && -n "$sys_home" ]]; then
      MMCV_NOTE="a CUDA toolkit is installed ($sys_home) but no GPU is visible: mmcv gets CPU ops;"
      MMCV_NOTE+=" REP_BACKBONES_MMCV_CUDA=1 bash tools/setup_env.sh builds its CUDA ops"
    fi
    return 0
  fi

  CUDA_TOOLKIT="${REP_BACKBONES_CUDA_TOOLKIT:-}"
  if [[ -z "$CUDA_TOOLKIT" ]]; then
    if [[ -n "$sys_home" ]]; then CUDA_TOOLKIT=system; else CUDA_TOOLKIT=pypi; fi
  fi
  case "$CUDA_TOOLKIT" in
    system)
      if [[ -z "$sys_home" ]]; then
        echo "[setup_env] no system CUDA toolkit: CUDA_HOME is unset and no nvcc is on PATH." \
          "Set CUDA_HOME, or REP_BACKBONES_CUDA_TOOLKIT=pypi for the pinned PyPI toolkit" >&2
        return 1
      fi
      if [[ ! -x "$sys_home/bin/nvcc" ]]; then
        echo "[setup_env] CUDA_HOME=$sys_home has no bin/nvcc. Set CUDA_HOME to a CUDA toolkit," \
          "or REP_BACKBONES_CUDA_TOOLKIT=pypi for the pinned PyPI toolkit" >&2
        return 1
      fi
      CUDA_TOOLKIT_HOME="$sys_home"
      CUDA_TOOLKIT_VERSION="$(_nvcc_release "$sys_home")"
      if [[ -z "$CUDA_TOOLKIT_VERSION" ]]; then
        echo "[setup_env] $sys_home/bin/nvcc --version does not name a CUDA release" >&2
        return 1
      fi ;;
    pypi)
      CUDA_TOOLKIT_HOME="$(_venv_site)/nvidia/cu13"
      CUDA_TOOLKIT_VERSION="$(sed -n 's/^nvidia-cuda-nvcc==\([0-9]*\.[0-9]*\).*/\1/p' \
                              "$ROOT/requirements/cuda-build.txt")" ;;
    *) echo "[setup_env] REP_BACKBONES_CUDA_TOOLKIT must be system or pypi, not '$CUDA_TOOLKIT'" >&2
       return 1 ;;
  esac

  if [[ -n "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
    CUDA_ARCHS="$TORCH_CUDA_ARCH_LIST"; CUDA_ARCHS_SOURCE="TORCH_CUDA_ARCH_LIST"
  else
    CUDA_ARCHS=""
    if command -v nvidia-smi >/dev/null 2>&1; then
      CUDA_ARCHS="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null \
                    | tr -d ' ' | grep -E '^[0-9]+\.[0-9]+$' | sort -u -V | paste -sd';' || true)"
    fi
    if [[ -n "$CUDA_ARCHS" ]]; then
      CUDA_ARCHS_SOURCE="visible GPUs"
    else
      CUDA_ARCHS="$CUDA_ARCHS_DEFAULT"; CUDA_ARCHS_SOURCE="default"
    fi
  fi
  local key="${CUDA_ARCHS//[; ]/_}"
  MMCV_VARIANT="cuda${CUDA_TOOLKIT_VERSION}-arch${key}"
  MMCV_WHEEL_DIR="$CACHE/wheels/$MMCV_VARIANT"
  MMCV_BUILD_ENV=(MMCV_WITH_OPS=1 FORCE_CUDA=1 "TORCH_CUDA_ARCH_LIST=$CUDA_ARCHS" "CUDA_HOME=$CUDA_TOOLKIT_HOME")
  # torch's CUDA headers include cuBLAS/cuSPARSE/cuSOLVER headers; a system toolkit without them (nvcc,
  # runtime and CCCL only) takes them from torch's own CUDA wheels in .venv (the PyPI toolkit lands there).
  if [[ "$CUDA_TOOLKIT" == system && ! -f "$CUDA_TOOLKIT_HOME/include/cublas_v2.h" ]]; then
    MMCV_BUILD_ENV+=("CUDA_INC_PATH=$(_venv_site)/nvidia/cu13/include")
  fi
}

mmcv_print_plan() {
  echo "variant=$MMCV_VARIANT"
  echo "reason=$MMCV_REASON"
  if [[ "$MMCV_VARIANT" != cpu ]]; then
    echo "toolkit=$CUDA_TOOLKIT"
    echo "cuda_home=$CUDA_TOOLKIT_HOME"
    echo "cuda_version=$CUDA_TOOLKIT_VERSION"
    echo "arch_list=$CUDA_ARCHS"
    echo "arch_source=$CUDA_ARCHS_SOURCE"
  fi
  echo "wheel_dir=$MMCV_WHEEL_DIR"
  echo "build_env=${MMCV_BUILD_ENV[*]}"
  if [[ -n "$MMCV_NOTE" ]]; then echo "note=$MMCV_NOTE"; fi
}
