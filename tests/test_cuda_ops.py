"""The start-up check of tools/train.py and tools/test.py (rep_backbones/mm/cuda_ops.py): a GPU with mmcv
ops built for CPU only stops the tool before it starts, naming the cause and the command that fixes it.
No GPU here: torch's answer and mmcv's are stood in for."""
from __future__ import annotations

import sys

import pytest
import torch

from rep_backbones.mm import cuda_ops

from .helpers import require, run

pytestmark = pytest.mark.mm

FIX = 'REP_BACKBONES_MMCV_CUDA=1 bash tools/setup_env.sh'


@pytest.fixture
def mmcv_ops():
    require('mmcv.ops')
    import mmcv.ops
    return mmcv.ops


def _pretend(monkeypatch, mmcv_ops, gpu: bool, compiled: str, torch_cuda: str = '13.0'):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: gpu)
    monkeypatch.setattr(torch.version, 'cuda', torch_cuda)
    monkeypatch.setattr(mmcv_ops, 'get_compiling_cuda_version', lambda: compiled)


def test_no_gpu_needs_no_cuda_ops(monkeypatch, mmcv_ops):
    _pretend(monkeypatch, mmcv_ops, gpu=False, compiled='not available')
    assert cuda_ops.mmcv_cuda_ops_problem() is None
    cuda_ops.check_mmcv_cuda_ops()


def test_gpu_with_cpu_only_ops_stops_with_the_fix(monkeypatch, mmcv_ops):
    _pretend(monkeypatch, mmcv_ops, gpu=True, compiled='not available')
    with pytest.raises(SystemExit) as err:
        cuda_ops.check_mmcv_cuda_ops()
    message = str(err.value)
    assert "get_compiling_cuda_version() is 'not available'" in message and 'torch sees a GPU' in message
    assert f'Fix: {FIX}' in message


def test_gpu_with_cuda_ops_of_the_same_major_version_passes(monkeypatch, mmcv_ops):
    _pretend(monkeypatch, mmcv_ops, gpu=True, compiled='13.0', torch_cuda='13.0')
    assert cuda_ops.mmcv_cuda_ops_problem() is None
    _pretend(monkeypatch, mmcv_ops, gpu=True, compiled='12.8', torch_cuda='13.0')
    assert 'built with CUDA 12.8, torch with CUDA 13.0' in cuda_ops.mmcv_cuda_ops_problem()


def test_gpu_with_ops_that_do_not_load(monkeypatch, mmcv_ops):
    def broken():
        raise OSError('libcudart.so.12: cannot open shared object file')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(mmcv_ops, 'get_compiling_cuda_version', broken)
    assert "mmcv's compiled ops do not load (OSError: libcudart.so.12" in cuda_ops.mmcv_cuda_ops_problem()


# torch sees a "GPU", mmcv says 'not available' (as it does here): the tools must stop at start-up,
# before they read the config (which does not exist).
PRETEND = ('import runpy, sys, torch, mmcv.ops; torch.cuda.is_available = lambda: True; '
           "mmcv.ops.get_compiling_cuda_version = lambda: 'not available'; "
           'sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")')


@pytest.mark.slow           # two tool processes
@pytest.mark.parametrize('tool, args', [('tools/train.py', ['missing.py']),
                                        ('tools/test.py', ['missing.py', 'missing.pth'])])
def test_the_tools_check_at_start_up(mmcv_ops, tool, args):
    proc = run([sys.executable, '-c', PRETEND, tool, *args], timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr and FIX in proc.stderr and 'missing.py' not in proc.stderr
