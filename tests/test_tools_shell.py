"""``tools/dist_train.sh`` / ``dist_test.sh`` pick their interpreter: ``$PYTHON``, else the checkout's
``.venv/bin/python``, else ``python`` from PATH — and pass the arguments through to torchrun.

Tested on copies of the scripts in a scratch checkout with stand-in interpreters that record how
they were called (a real distributed run with ``PYTHON=`` is part of tests/test_pipeline.py).
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from .helpers import ROOT, run

pytestmark = [pytest.mark.slow, pytest.mark.tools]

SCRIPTS = {'dist_train.sh': ['CONFIG.py', '2'], 'dist_test.sh': ['CONFIG.py', 'CKPT.pth', '2']}


def _recorder(path: Path, tag: str) -> Path:
    """An executable that writes ``tag`` and its arguments (one per line) to ``$RECORD``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\n{{ echo {tag}; for a in "$@"; do echo "$a"; done; }} > "$RECORD"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def checkout(tmp_path):
    """A scratch checkout holding copies of the two scripts; ``bin/python`` is on PATH."""
    repo = tmp_path / 'repo'
    for name in SCRIPTS:
        (repo / 'tools').mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / 'tools' / name, repo / 'tools' / name)
    _recorder(tmp_path / 'bin' / 'python', 'path-python')
    return repo


def _run(repo: Path, script: str, env_extra: dict) -> list:
    record = repo.parent / 'record.txt'
    env = dict(PATH=f'{repo.parent / "bin"}:{os.environ.get("PATH", "")}', RECORD=str(record), **env_extra)
    proc = run(['bash', repo / 'tools' / script, *SCRIPTS[script], '--extra', 'a b'], cwd=None, env=env,
               unset=('PYTHON', 'PYTHONPATH'), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return record.read_text().splitlines()


@pytest.mark.parametrize('script', sorted(SCRIPTS))
def test_interpreter_resolution(checkout, script):
    tool = 'train.py' if script == 'dist_train.sh' else 'test.py'
    # no .venv: python from PATH, with the arguments passed through to torchrun and the tool
    argv = _run(checkout, script, {})
    assert argv[0] == 'path-python'
    assert argv[1:3] == ['-m', 'torch.distributed.run'] and '--nproc_per_node=2' in argv
    assert argv[argv.index(str(checkout / 'tools' / tool)):] == [
        str(checkout / 'tools' / tool), *SCRIPTS[script][:-1], '--launcher', 'pytorch', '--extra', 'a b']
    # the checkout's .venv wins over PATH
    _recorder(checkout / '.venv' / 'bin' / 'python', 'venv-python')
    assert _run(checkout, script, {})[0] == 'venv-python'
    # PYTHON= overrides both
    override = _recorder(checkout.parent / 'other' / 'python3', 'env-python')
    assert _run(checkout, script, {'PYTHON': str(override)})[0] == 'env-python'


def test_missing_arguments_say_usage():
    proc = run(['bash', ROOT / 'tools' / 'dist_train.sh', 'CONFIG.py'], cwd=None, timeout=60)
    assert proc.returncode != 0 and 'usage: bash tools/dist_train.sh CONFIG NUM_PROCS' in proc.stderr

