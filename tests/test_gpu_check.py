"""tools/gpu_check.py, the parts that run without a GPU: its arguments, its summary, the clean stop (exit
status 2, a message, nothing run or written) on a machine without CUDA, how a failing or hanging step is
reported and stopped, the benchmark arguments, and the in-process steps (mmcv ops, fuse) run on CPU. On
CUDA the steps run on a GPU machine only (docs/gpu.md)."""
from __future__ import annotations

import os
import time

import pytest
import torch

from .helpers import load_tool, require, run_tool

pytestmark = pytest.mark.tools


@pytest.fixture(scope='module')
def gpu_check():
    return load_tool('tools/gpu_check.py')


def test_arguments(gpu_check, monkeypatch):
    monkeypatch.setenv('OUT', '/somewhere/out')
    args = gpu_check.parse_args([])
    assert (args.out_dir, args.iters, args.skip) == ('/somewhere/out', 20, [])
    monkeypatch.delenv('OUT')
    assert gpu_check.parse_args([]).out_dir == 'work_dirs/gpu_check'
    assert gpu_check.parse_args(['--skip', 'train', 'test']).skip == ['train', 'test']
    for bad in (['--iters', '0'], ['--skip', 'everything']):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)


def test_the_steps_fit_in_eight_minutes(gpu_check):
    # subprocess steps are bounded by their timeouts; the in-process steps (mmcv ops, fuse) take seconds
    assert sum(gpu_check.TIMEOUTS.values()) <= 8 * 60 - 60
    assert set(gpu_check.STEPS) >= {'train', 'test', 'bench-float16', 'bench-bfloat16'}


def test_summary_table(gpu_check):
    rows = [dict(step='train', ok=True, seconds=31.5, details='20 iterations | SyncBN'),
            dict(step='test', ok=False, seconds=2.0, details='RuntimeError: exit status 1\nlast line')]
    text = gpu_check.summary(dict(gpu='NVIDIA H200', torch='2.14.1'), rows, {'bench-float16': '| a | b |'})
    assert 'gpu NVIDIA H200, torch 2.14.1' in text
    assert '| train | ok | 31.5 | 20 iterations \\| SyncBN |' in text
    assert '| test | FAILED | 2.0 | RuntimeError: exit status 1 last line |' in text
    assert '## bench-float16\n\n| a | b |' in text


@pytest.mark.slow           # a whole tool
@pytest.mark.skipif(torch.cuda.is_available(), reason='a CUDA device is visible: the check would run')
def test_without_cuda_it_stops_cleanly(tmp_path):
    """The command line, run in this process (tests.helpers.run_tool: it stops before any step)."""
    result = run_tool('tools/gpu_check.py', '--out-dir', tmp_path / 'out')
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'no CUDA device' in result.stderr and 'torch.cuda.is_available() is False' in result.stderr
    assert 'Traceback' not in result.stderr and not (tmp_path / 'out').exists()


def test_the_benchmark_accepts_the_check_arguments(gpu_check, tmp_path):
    benchmark = load_tool('tools/benchmark.py')
    args = benchmark.parse_args(gpu_check.benchmark_args('bfloat16', ['nchw', 'channels_last'], tmp_path))
    assert (args.device, args.dtype, args.compile) == ('cuda', 'bfloat16', 'default')
    assert args.memory_format == ['nchw', 'channels_last'] and args.variants == ['train', 'fused']


def test_the_fuse_step_on_cpu(gpu_check, tmp_path, one_thread):
    # the step's own logic (every family, BN and SyncBN, compared with the training form) on this machine
    check = gpu_check.Check(tmp_path, iters=1, device='cpu')
    check.step('fuse', check.fuse)
    row = check.rows[0]
    assert row['ok'], row['details']
    assert row['details'].startswith(f'{len(gpu_check.FUSE_SPECS)} backbones x BN/SyncBN fused on cpu')


def test_the_mmcv_ops_step_on_cpu(gpu_check, tmp_path):
    require('mmcv.ops')
    check = gpu_check.Check(tmp_path, iters=1, device='cpu')
    check.step('mmcv-ops', check.mmcv_ops)
    assert check.rows[0]['ok'], check.rows[0]['details']
    assert check.rows[0]['details'].endswith('NMS equal') and check.mmcv_ok is True


def test_a_step_that_fails_or_hangs_is_reported_and_stopped(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setitem(gpu_check.TIMEOUTS, 'hang', 2)
    monkeypatch.setitem(gpu_check.TIMEOUTS, 'fail', 30)
    check = gpu_check.Check(tmp_path, iters=1, device='cpu')
    check.step('fail', lambda: check._run('fail', ['bash', '-c', 'echo some output; exit 3']))
    pid_file = tmp_path / 'child.pid'
    # a child of the command (as torchrun's workers are) must not outlive the time-out
    hang = ['bash', '-c', f'sleep 60 & echo $! > {pid_file}; echo waiting; wait']
    check.step('hang', lambda: check._run('hang', hang))
    fail, hang = check.rows
    assert not fail['ok'] and 'exit status 3' in fail['details'] and 'some output' in fail['details']
    assert (tmp_path / 'logs' / 'fail.log').read_text() == 'some output\n'
    assert not hang['ok'] and 'timed out after 2 s' in hang['details'] and hang['seconds'] < 30
    assert (tmp_path / 'logs' / 'hang.log').read_text() == 'waiting\n'
    pid = int(pid_file.read_text())
    for _ in range(50):
        if not os.path.exists(f'/proc/{pid}') or open(f'/proc/{pid}/stat').read().split()[2] == 'Z':
            break
        time.sleep(0.1)
    else:
        pytest.fail(f'the child {pid} of the timed-out command still runs')
