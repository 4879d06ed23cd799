"""``tools/setup_env.sh`` builds mmcv's ops for CPU or CUDA (tools/cuda_env.sh decides) and caches each
variant's wheel apart; switching variants reinstalls.

Run on a scratch copy of the set-up files with a stand-in toolchain on PATH: ``nvidia-smi`` and ``nvcc``
stubs (nvcc behind a wrapper, as a system install often has it), and, for the build itself, a stand-in
``.venv/bin/python`` that plays pip (it records the build's environment and the patched ``setup.py``
and writes a dummy wheel). Nothing here touches the real ``.venv`` or wheel cache.
"""
from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from .helpers import ROOT, run

pytestmark = pytest.mark.tools

# The stand-in interpreter of .venv: `-c` checks, and `-m pip` download / wheel / install.
FAKE_VENV_PYTHON = r'''#!{python}
import os, shutil, sys, tarfile
rec = os.environ['RECORD_DIR']
args = sys.argv[1:]
with open(os.path.join(rec, 'calls'), 'a') as f:
    f.write(' '.join(args) + '\n')
if args[0] == '-c':
    code = args[1]
    if 'is_available' in code:
        sys.exit(0 if os.environ.get('STUB_TORCH_GPU') == '1' else 1)
    if 'torch.version.cuda' in code:
        print(os.environ.get('STUB_TORCH_CUDA', '13.0'))
    elif 'version_info' in code:
        print('python3.11')
    sys.exit(0)
if args[0] == '-':                       # the final import check reads its code from stdin
    sys.stdin.read()
    sys.exit(0)
assert args[:2] == ['-m', 'pip'], args
cmd = args[3]
if cmd == 'download':
    dest = args[args.index('-d') + 1]
    src = os.path.join(dest, 'src', 'mmcv-2.1.0')
    os.makedirs(src)
    shutil.copy(os.environ['FAKE_SETUP_PY'], os.path.join(src, 'setup.py'))
    with tarfile.open(os.path.join(dest, 'mmcv-2.1.0.tar.gz'), 'w:gz') as tar:
        tar.add(src, arcname='mmcv-2.1.0')
elif cmd == 'wheel':
    out, src = args[args.index('-w') + 1], [a for a in args[4:] if not a.startswith('-')][0]
    with open(os.path.join(rec, 'wheel_env'), 'w') as f:
        f.write('\n'.join(f'{k}={v}' for k, v in sorted(os.environ.items())))
    shutil.copy(os.path.join(src, 'setup.py'), os.path.join(rec, 'built_setup.py'))
    lib = os.environ.get('LIBRARY_PATH', '').split(':')[0]
    if lib:                              # the link to a versioned libcudart made for the build
        with open(os.path.join(rec, 'cudart'), 'w') as f:
            f.write(os.readlink(os.path.join(lib, 'libcudart.so')))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'), 'w') as f:
        f.write(os.environ.get('REP_BACKBONES_MMCV_CUDA', 'auto'))
'''


def _exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _fake_setup_py(patches: list, dest: Path) -> Path:
    """A setup.py holding the lines the patches change (their '-' and context lines), as in mmcv's sdist."""
    lines = []
    for patch in patches:
        for line in patch.read_text().splitlines():
            if line.startswith((' ', '-')) and not line.startswith('---'):
                lines.append(line[1:])
        lines.append('# ---')
    dest.write_text('\n'.join(lines) + '\n')
    return dest


@pytest.fixture
def box(tmp_path):
    """A scratch checkout with the set-up files, an empty bin/ for stubs, and the environment to run it in."""
    repo = tmp_path / 'repo'
    for rel in ('tools/setup_env.sh', 'tools/cuda_env.sh', 'setup.py', 'pyproject.toml', 'rep_backbones/version.py'):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, repo / rel)
    shutil.copytree(ROOT / 'tools' / 'patches', repo / 'tools' / 'patches')
    shutil.copytree(ROOT / 'requirements', repo / 'requirements')
    (tmp_path / 'bin').mkdir()
    (tmp_path / 'record').mkdir()
    env = dict(PATH=f'{tmp_path / "bin"}:/usr/bin:/bin', HOME=str(tmp_path / 'home'),
               REP_BACKBONES_CACHE=str(tmp_path / 'cache'), PYTHON=sys.executable,
               RECORD_DIR=str(tmp_path / 'record'))
    return tmp_path, repo, env


UNSET = ('CUDA_HOME', 'CUDA_PATH', 'TORCH_CUDA_ARCH_LIST', 'REP_BACKBONES_MMCV_CUDA', 'REP_BACKBONES_CUDA_TOOLKIT',
         'MAX_JOBS', 'PIP_CONSTRAINT', 'VIRTUAL_ENV')
no_gpu_here = pytest.mark.skipif(os.path.exists('/dev/nvidia0'), reason='a GPU is visible on this machine')


def _setup(box, *args, **env_extra):
    tmp, repo, env = box
    return run(['bash', repo / 'tools' / 'setup_env.sh', *args], cwd=None, env={**env, **env_extra}, unset=UNSET,
               timeout=120)


def _plan(box, **env_extra) -> dict:
    proc = _setup(box, '--plan', **env_extra)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split('=', 1) for line in proc.stdout.splitlines())


def _toolkit(tmp: Path, release: str = '13.0', cudart: str = 'lib64/libcudart.so') -> Path:
    """A CUDA toolkit stub in tmp/cuda, reached through a wrapper bin/nvcc on PATH."""
    home = tmp / 'cuda'
    (home / cudart).parent.mkdir(parents=True)
    (home / cudart).touch()
    _exe(home / 'bin' / 'nvcc', f'#!/bin/sh\ncase "$*" in\n  *--version*) echo "Cuda compilation tools, release '
         f'{release}, V{release}.88";;\n  *--dryrun*) echo "#\\$ _HERE_={home / "bin"}" >&2;;\nesac\n')
    _exe(tmp / 'bin' / 'nvcc', f'#!/bin/sh\nexec {home / "bin" / "nvcc"} "$@"\n')
    return home


def _nvidia_smi(tmp: Path, caps=('9.0',)) -> None:
    listing = ''.join(f'echo "GPU {i}: NVIDIA GPU (UUID: GPU-{i})"; ' for i in range(len(caps)))
    query = ''.join(f'echo "{c}"; ' for c in caps)
    _exe(tmp / 'bin' / 'nvidia-smi',
         f'#!/bin/sh\ncase "$*" in\n  *-L*) {listing};;\n  *compute_cap*) {query};;\nesac\n')


# -- the decision -------------------------------------------------------------------------------------
@no_gpu_here
def test_a_toolkit_alone_keeps_the_cpu_build_and_says_how_to_opt_in(box):
    tmp, _, _ = box
    home = _toolkit(tmp)
    plan = _plan(box)
    assert plan['variant'] == 'cpu' and plan['reason'] == 'no GPU visible'
    assert plan['build_env'] == 'MMCV_WITH_OPS=1 FORCE_CUDA=0'
    assert plan['wheel_dir'] == str(tmp / 'cache' / 'wheels')     # where CPU wheels have always been cached
    assert str(home) in plan['note'] and 'REP_BACKBONES_MMCV_CUDA=1 bash tools/setup_env.sh' in plan['note']
    assert plan['stamp'].endswith(' cpu')


@no_gpu_here
def test_no_gpu_and_no_toolkit_is_a_quiet_cpu_build(box):
    plan = _plan(box)
    assert plan['variant'] == 'cpu' and 'note' not in plan


def test_a_visible_gpu_builds_cuda_ops_with_the_system_toolkit_for_its_architectures(box):
    tmp, _, _ = box
    home = _toolkit(tmp)
    _nvidia_smi(tmp, caps=('9.0', '8.0', '9.0'))
    plan = _plan(box)
    assert plan['reason'] == 'nvidia-smi lists 3 GPU(s)'
    assert plan['toolkit'] == 'system' and plan['cuda_home'] == str(home) and plan['cuda_version'] == '13.0'
    assert plan['arch_list'] == '8.0;9.0' and plan['arch_source'] == 'visible GPUs'
    assert plan['variant'] == 'cuda13.0-arch8.0_9.0'
    assert plan['wheel_dir'] == str(tmp / 'cache' / 'wheels' / 'cuda13.0-arch8.0_9.0')
    env = plan['build_env'].split(' ')
    assert env[:5] == ['MMCV_WITH_OPS=1', 'FORCE_CUDA=1', 'TORCH_CUDA_ARCH_LIST=8.0;9.0', f'CUDA_HOME={home}',
                       f'CUDA_INC_PATH={tmp}/repo/.venv/lib/python3.11/site-packages/nvidia/cu13/include']
    assert plan['stamp'].endswith(' cuda13.0-arch8.0_9.0')
    # the variables the user sets win: CUDA_HOME over nvcc on PATH, TORCH_CUDA_ARCH_LIST over the GPUs
    other = _toolkit(tmp / 'other', release='13.1')
    plan = _plan(box, CUDA_HOME=str(other), TORCH_CUDA_ARCH_LIST='10.0')
    assert plan['cuda_home'] == str(other) and plan['cuda_version'] == '13.1'
    assert plan['arch_list'] == '10.0' and plan['arch_source'] == 'TORCH_CUDA_ARCH_LIST'
    assert plan['variant'] == 'cuda13.1-arch10.0'


@no_gpu_here
def test_forced_cuda_without_gpu_or_toolkit_takes_the_pinned_pypi_toolkit(box):
    tmp, repo, _ = box
    plan = _plan(box, REP_BACKBONES_MMCV_CUDA='1')
    site = repo / '.venv' / 'lib' / 'python3.11' / 'site-packages'
    assert plan['reason'] == 'REP_BACKBONES_MMCV_CUDA=1' and plan['toolkit'] == 'pypi'
    assert plan['cuda_home'] == str(site / 'nvidia' / 'cu13')
    pins = (ROOT / 'requirements' / 'cuda-build.txt').read_text()
    assert 'nvidia-cuda-nvcc==13.0.' in pins and plan['cuda_version'] == '13.0'
    assert plan['arch_list'] == '8.0;9.0+PTX' and plan['arch_source'] == 'default'
    assert plan['variant'] == 'cuda13.0-arch8.0_9.0+PTX'
    assert 'CUDA_INC_PATH' not in plan['build_env']      # the PyPI toolkit lands beside torch's CUDA headers


def test_torch_seeing_a_gpu_counts_and_forced_cpu_wins_over_a_gpu(box):
    tmp, repo, _ = box
    _exe(repo / '.venv' / 'bin' / 'python', FAKE_VENV_PYTHON.replace('{python}', sys.executable))
    if not os.path.exists('/dev/nvidia0'):
        assert _plan(box)['variant'] == 'cpu'
    plan = _plan(box, STUB_TORCH_GPU='1', TORCH_CUDA_ARCH_LIST='9.0')
    assert plan['reason'] == 'torch in .venv sees a GPU' or os.path.exists('/dev/nvidia0')
    assert plan['variant'] == 'cuda13.0-arch9.0'
    _nvidia_smi(tmp)
    plan = _plan(box, REP_BACKBONES_MMCV_CUDA='0')
    assert plan['variant'] == 'cpu' and plan['reason'] == 'REP_BACKBONES_MMCV_CUDA=0' and 'note' not in plan


@pytest.mark.parametrize('env, message', [
    (dict(REP_BACKBONES_MMCV_CUDA='yes'), "REP_BACKBONES_MMCV_CUDA must be 1 (CUDA ops) or 0 (CPU ops), not 'yes'"),
    (dict(REP_BACKBONES_MMCV_CUDA='1', REP_BACKBONES_CUDA_TOOLKIT='system'),
     'no system CUDA toolkit: CUDA_HOME is unset and no nvcc is on PATH'),
    (dict(REP_BACKBONES_MMCV_CUDA='1', CUDA_HOME='/nonexistent/cuda'), 'CUDA_HOME=/nonexistent/cuda has no bin/nvcc'),
    (dict(REP_BACKBONES_MMCV_CUDA='1', REP_BACKBONES_CUDA_TOOLKIT='conda'),
     "REP_BACKBONES_CUDA_TOOLKIT must be system or pypi, not 'conda'"),
])
def test_bad_settings_stop_with_the_reason(box, env, message):
    proc = _setup(box, '--plan', **env)
    assert proc.returncode != 0 and message in proc.stderr and proc.stdout == ''


def test_unknown_argument_says_usage(box):
    proc = _setup(box, '--build')
    assert proc.returncode == 2 and 'usage: bash tools/setup_env.sh [--plan | --wheel]' in proc.stderr


# -- the build ----------------------------------------------------------------------------------------
@pytest.fixture
def fake_venv(box):
    tmp, repo, env = box
    _exe(repo / '.venv' / 'bin' / 'python', FAKE_VENV_PYTHON.replace('{python}', sys.executable))
    patches = [repo / 'tools' / 'patches' / 'mmcv-2.1.0-torch2.14.patch',
               repo / 'tools' / 'patches' / 'mmcv-2.1.0-cuda-torch2.14.patch']
    env['FAKE_SETUP_PY'] = str(_fake_setup_py(patches, tmp / 'setup.py'))
    return box


def _wheel_env(tmp: Path) -> dict:
    return dict(line.split('=', 1) for line in (tmp / 'record' / 'wheel_env').read_text().splitlines() if '=' in line)


def test_cuda_build_patches_and_caches_its_wheel_apart(fake_venv):
    tmp, repo, _ = fake_venv
    home = _toolkit(tmp, cudart='lib/libcudart.so.13')     # as the PyPI runtime has it: no libcudart.so
    proc = _setup(fake_venv, '--wheel', REP_BACKBONES_MMCV_CUDA='1', TORCH_CUDA_ARCH_LIST='9.0', MAX_JOBS='1')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheel = tmp / 'cache' / 'wheels' / 'cuda13.0-arch9.0' / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'
    assert wheel.read_text() == '1' and f'mmcv wheel (cuda13.0-arch9.0): {wheel}' in proc.stdout
    env = _wheel_env(tmp)
    assert (env['FORCE_CUDA'], env['MMCV_WITH_OPS'], env['TORCH_CUDA_ARCH_LIST'], env['CUDA_HOME'], env['MAX_JOBS']) \
        == ('1', '1', '9.0', str(home), '1')
    assert (tmp / 'record' / 'cudart').read_text() == str(home / 'lib' / 'libcudart.so.13')
    built = (tmp / 'record' / 'built_setup.py').read_text()
    assert "extra_compile_args['cxx'] = ['-std=c++20']" in built
    assert "extra_compile_args['nvcc'] += ['-std=c++20']" in built and "['-std=c++17']" not in built
    # --wheel leaves the environment alone: no install, no stamp
    calls = (tmp / 'record' / 'calls').read_text()
    assert ' install ' not in calls and not (repo / '.venv' / '.rep_backbones_env').exists()
    # the cached wheel is used: a second run builds nothing
    (tmp / 'record' / 'wheel_env').unlink()
    assert _setup(fake_venv, '--wheel', REP_BACKBONES_MMCV_CUDA='1', TORCH_CUDA_ARCH_LIST='9.0').returncode == 0
    assert not (tmp / 'record' / 'wheel_env').exists()


def test_cuda_build_refuses_a_toolkit_of_another_major_version_than_torch(fake_venv):
    tmp, _, _ = fake_venv
    _toolkit(tmp, release='12.8')
    proc = _setup(fake_venv, '--wheel', REP_BACKBONES_MMCV_CUDA='1', TORCH_CUDA_ARCH_LIST='9.0')
    assert proc.returncode != 0
    assert 'is CUDA 12.8, torch was built with CUDA 13.0' in proc.stderr
    assert 'REP_BACKBONES_CUDA_TOOLKIT=pypi' in proc.stderr
    assert not (tmp / 'record' / 'wheel_env').exists()


@no_gpu_here
def test_switching_between_cpu_and_cuda_ops_reinstalls(fake_venv):
    tmp, repo, _ = fake_venv
    _toolkit(tmp)
    stamp = repo / '.venv' / '.rep_backbones_env'
    cuda = dict(REP_BACKBONES_MMCV_CUDA='1', TORCH_CUDA_ARCH_LIST='9.0')
    proc = _setup(fake_venv, **cuda)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stamp.read_text().strip().endswith(' cuda13.0-arch9.0')
    assert 'installing mmcv-2.1.0-cp311-cp311-linux_x86_64.whl (cuda13.0-arch9.0)' in proc.stdout
    assert '.venv is up to date' in _setup(fake_venv, **cuda).stdout
    # back to the default (no GPU here): the CPU wheel is built into the old place and installed
    proc = _setup(fake_venv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'installing mmcv-2.1.0-cp311-cp311-linux_x86_64.whl (cpu)' in proc.stdout
    assert stamp.read_text().strip().endswith(' cpu')
    assert _wheel_env(tmp)['FORCE_CUDA'] == '0'
    assert "['-std=c++17']" in (tmp / 'record' / 'built_setup.py').read_text()   # no nvcc patch for the CPU build
    assert (tmp / 'cache' / 'wheels' / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl').read_text() == 'auto'
    assert (tmp / 'cache' / 'wheels' / 'cuda13.0-arch9.0' / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl').read_text() \
        == '1'
