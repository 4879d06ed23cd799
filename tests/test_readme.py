"""The command blocks of the README and of docs/*.md stay true: every script they run exists, every option
they pass is one the script accepts (its ``--help``), and every config path they name exists. (What the commands *do* is
tested elsewhere: the main job in test_demo.py, training / testing / fused checkpoints in
test_pipeline.py, export / quantize / benchmark / mmdeploy in their own files.)"""
import functools
import glob
import os
import re
import shlex

import pytest

from .helpers import ROOT, run_tool_ok

pytestmark = [pytest.mark.slow, pytest.mark.tools]


DOCS = ['README.md', *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'docs', '**', '*.md'),
                                                                       recursive=True))]


def _commands(page='README.md'):
    text = open(os.path.join(ROOT, page)).read()
    lines = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        heredoc = None                      # the body of `cmd <<'END'` ... `END` is input, not commands
        for line in block.replace('\\\n', ' ').splitlines():
            if heredoc is not None:
                heredoc = None if line.strip() == heredoc else heredoc
                continue
            match = re.search(r"<<-?\s*'?(\w+)'?", line)
            heredoc = match.group(1) if match else None
            line = line.split('#')[0].strip()
            if line:
                lines.append(line)
    return lines


COMMANDS = _commands()
DOC_COMMANDS = [(page, command) for page in DOCS[1:] for command in _commands(page)]


@functools.lru_cache(maxsize=None)
def _help(script: str) -> str:
    """``python SCRIPT --help``, run in this process (a new interpreter per tool cost ~9 s of imports; that
    each tool starts as a script is test_tools_deploy.py's ``test_tools_help``)."""
    return run_tool_ok(script, '--help')


def test_the_readme_has_commands():
    assert any(c.startswith('bash tools/run_demo.sh') for c in COMMANDS)
    assert sum(c.startswith('python tools/') for c in COMMANDS) >= 4


@pytest.mark.parametrize('command', COMMANDS)
def test_readme_command_is_valid(command):
    _check(command)


@pytest.mark.parametrize('page, command', DOC_COMMANDS)
def test_docs_command_is_valid(page, command):
    _check(command)


def _check(command):
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
