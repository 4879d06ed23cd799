"""The README's command blocks stay true: every script they run exists, every option they pass is one the
script accepts (its ``--help``), and every config path they name exists. (What the commands *do* is
tested elsewhere: the main job in test_demo.py, training / testing / fused checkpoints in
test_pipeline.py, export / quantize / benchmark / mmdeploy in their own files.)"""
import functools
import os
import re
import shlex
import sys

import pytest

from .helpers import ROOT, run_ok

pytestmark = [pytest.mark.slow, pytest.mark.tools]


def _commands():
    text = open(os.path.join(ROOT, 'README.md')).read()
    lines = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            line = line.split('#')[0].strip()
            if line:
                lines.append(line)
    return lines


COMMANDS = _commands()


@functools.lru_cache(maxsize=None)
def _help(script: str) -> str:
    return run_ok([sys.executable, script, '--help'], timeout=300)


def test_the_readme_has_commands():
    assert any(c.startswith('bash tools/run_demo.sh') for c in COMMANDS)
    assert sum(c.startswith('python tools/') for c in COMMANDS) >= 6


@pytest.mark.parametrize('command', COMMANDS)
def test_readme_command_is_valid(command):
    words = shlex.split(command)
    while words and '=' in words[0] and not words[0].startswith('-'):   # VAR=value prefixes
        words = words[1:]
    tool = next((w for w in words if w.startswith('tools/')), None)
    if tool is not None:
        assert os.path.isfile(os.path.join(ROOT, tool)), f'{tool} does not exist'
    for word in words:
        if word.startswith('configs/') and word.endswith('.py'):
            assert os.path.isfile(os.path.join(ROOT, word)), f'{word} does not exist'
    if words[0] in ('python', 'python3') and tool and tool.endswith('.py'):
        usage = _help(tool)
        for option in (w.split('=')[0] for w in words if w.startswith('--')):
            assert option in usage, f'{tool} has no option {option}'
    if words[0] == 'mim' and len(words) > 3 and words[2] == 'rep_backbones' and words[3].endswith('.py'):
        names = {f for _, _, files in os.walk(os.path.join(ROOT, 'configs')) for f in files}
        assert words[3] in names, f'mim would not find {words[3]}'
