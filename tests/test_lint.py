"""The code keeps the lint rules of ``[tool.ruff]`` in pyproject.toml (pycodestyle, pyflakes, import order):
``ruff check .`` finds nothing. Fix with ``.venv/bin/ruff check --fix .`` (import order) or by hand."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT

pytestmark = pytest.mark.tools


def _ruff() -> str:
    found = Path(sys.executable).with_name('ruff')
    if found.is_file():
        return str(found)
    found = shutil.which('ruff')
    assert found, 'ruff is not installed (requirements/runtime.txt pins it; run tools/setup_env.sh)'
    return found


def test_ruff_finds_nothing():
    proc = subprocess.run([_ruff(), 'check', '--no-cache', '--output-format', 'concise', '.'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f'ruff check found problems:\n{proc.stdout}{proc.stderr}'


def test_ruff_would_catch_an_unused_import(tmp_path):
    """The configuration is the one that is read, and it checks what it claims to."""
    bad = tmp_path / 'bad.py'
    bad.write_text('import os\n')
    proc = subprocess.run([_ruff(), 'check', '--no-cache', '--config', str(Path(ROOT) / 'pyproject.toml'), str(bad)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and 'F401' in proc.stdout
