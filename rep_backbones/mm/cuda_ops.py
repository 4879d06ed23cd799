"""Start-up check of ``tools/train.py`` and ``tools/test.py``: on a machine where torch sees a GPU,
mmcv's compiled ops must have CUDA kernels. Without them the first RoIAlign or NMS on a CUDA tensor
stops deep inside a training or test step; here the run stops before it starts, with the cause and the
command that builds mmcv with CUDA ops (docs/gpu.md)."""
from __future__ import annotations

from typing import Optional

import torch

FIX = 'REP_BACKBONES_MMCV_CUDA=1 bash tools/setup_env.sh'


def mmcv_cuda_ops_problem() -> Optional[str]:
    """What keeps mmcv's ops from running on this machine's GPU, or ``None`` (no GPU, or ops with CUDA)."""
    if not torch.cuda.is_available():
        return None
    try:
        from mmcv.ops import get_compiling_cuda_version
        compiled = get_compiling_cuda_version()
    except Exception as err:  # noqa: BLE001  (a compiled extension fails with ImportError, OSError, ...)
        return f"mmcv's compiled ops do not load ({type(err).__name__}: {err})"
    if compiled == 'not available':
        return ("mmcv's compiled ops have no CUDA kernels (mmcv.ops.get_compiling_cuda_version() is "
                "'not available': mmcv was built with CPU ops only), but torch sees a GPU")
    built, runtime = compiled.split('.')[0], (torch.version.cuda or '').split('.')[0]
    if built != runtime:
        return (f"mmcv's compiled ops were built with CUDA {compiled}, torch with CUDA {torch.version.cuda}: "
                'the major versions must match')
    return None


def check_mmcv_cuda_ops() -> None:
    """Stop the tool (``SystemExit`` with the message) when :func:`mmcv_cuda_ops_problem` finds one."""
    problem = mmcv_cuda_ops_problem()
    if problem is not None:
        raise SystemExit(f'[rep_backbones] {problem}. Fix: {FIX}  (builds mmcv with CUDA ops for the '
                         'visible GPUs and reinstalls it; see docs/gpu.md)')
