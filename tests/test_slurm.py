"""``tools/slurm_train.sh`` / ``slurm_test.sh``: mmdetection's interface (PARTITION JOB_NAME CONFIG
WORK_DIR|CHECKPOINT [args], GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS), the interpreter rule of the
other shell tools, and a real ``--launcher slurm`` run.

A stand-in ``srun`` on PATH records its options, the command and its environment; asked to, it runs the
command once as Slurm's single task would (SLURM_PROCID=0, SLURM_NTASKS=1, SLURM_NODELIST, SLURM_LOCALID),
with a stand-in ``scontrol`` that resolves the node list to 127.0.0.1 (mmengine asks it for the master
address). The run trains and tests the toy Mask R-CNN on CPU in a one-process group.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from .helpers import ROOT, free_port, run
from .test_pipeline import DET_CFG, det_options, toy_coco  # noqa: F401  (toy_coco: module fixture)

pytestmark = [pytest.mark.slow, pytest.mark.tools]

FAKE_SRUN = r'''#!{python}
import json, os, subprocess, sys
args, i = sys.argv[1:], 0
while i < len(args) and args[i].startswith('-'):
    i += 2 if args[i] == '-p' else 1
record = dict(options=args[:i], command=args[i:], env=dict(os.environ))
with open(os.environ['SRUN_RECORD'], 'w') as f:
    json.dump(record, f)
if os.environ.get('SRUN_EXECUTE') != '1':
    sys.exit(0)
task = dict(os.environ, SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_NODELIST='node001', SLURM_LOCALID='0',
            SLURM_JOB_ID='1', SLURM_NNODES='1')
sys.exit(subprocess.call(args[i:], env=task))
'''
FAKE_SCONTROL = '#!/bin/sh\n[ "$1 $2 $3" = "show hostname node001" ] && echo 127.0.0.1\n'


def _exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def slurm(tmp_path):
    """bin/ with the stand-in srun and scontrol; returns (env for run(), the record file)."""
    _exe(tmp_path / 'bin' / 'srun', FAKE_SRUN.replace('{python}', sys.executable))
    _exe(tmp_path / 'bin' / 'scontrol', FAKE_SCONTROL)
    record = tmp_path / 'srun.json'
    env = dict(PATH=f'{tmp_path / "bin"}:{os.environ.get("PATH", "")}', SRUN_RECORD=str(record))
    return env, record


SCRIPTS = {'slurm_train.sh': ('train.py', ['gpu', 'job', 'CONFIG.py', 'WORK'], ['--work-dir=WORK']),
           'slurm_test.sh': ('test.py', ['gpu', 'job', 'CONFIG.py', 'CKPT.pth'], ['CKPT.pth'])}


@pytest.mark.parametrize('script', sorted(SCRIPTS))
def test_srun_options_and_command(slurm, tmp_path, script):
    env, record = slurm
    repo = tmp_path / 'repo'
    (repo / 'tools').mkdir(parents=True)
    shutil.copy(ROOT / 'tools' / script, repo / 'tools' / script)
    tool, args, tool_args = SCRIPTS[script]

    def srun(**extra):
        proc = run(['bash', repo / 'tools' / script, *args, '--extra', 'a b'], cwd=None, env={**env, **extra},
                   unset=('PYTHON', 'PYTHONPATH', 'GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS'), timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(record.read_text())

    # mmdet's defaults: 8 GPUs on one node, 5 CPUs per task; python from PATH without a .venv
    rec = srun()
    assert rec['options'] == ['-p', 'gpu', '--job-name=job', '--gres=gpu:8', '--ntasks=8', '--ntasks-per-node=8',
                              '--cpus-per-task=5', '--kill-on-bad-exit=1']
    assert rec['command'] == ['python', '-u', str(repo / 'tools' / tool), 'CONFIG.py', *tool_args,
                              '--launcher=slurm', '--extra', 'a b']
    assert rec['env']['PYTHONPATH'].split(':')[0] == str(repo)
    # two nodes, SRUN_ARGS split at spaces and placed before the command
    rec = srun(GPUS='16', GPUS_PER_NODE='8', CPUS_PER_TASK='4', SRUN_ARGS='--time=1:00:00 --qos=high')
    assert rec['options'][3:] == ['--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8', '--cpus-per-task=4',
                                  '--kill-on-bad-exit=1', '--time=1:00:00', '--qos=high']
    # fewer GPUs than a node has: ask for those only
    rec = srun(GPUS='2')
    assert rec['options'][3:6] == ['--gres=gpu:2', '--ntasks=2', '--ntasks-per-node=2']
    # the checkout's .venv wins over PATH, $PYTHON over both
    venv_python = _exe(repo / '.venv' / 'bin' / 'python', '#!/bin/sh\n')
    assert srun()['command'][0] == str(venv_python)
    assert srun(PYTHON='/opt/py/bin/python3')['command'][0] == '/opt/py/bin/python3'


def test_missing_arguments_say_usage():
    proc = run(['bash', ROOT / 'tools' / 'slurm_test.sh', 'gpu', 'job', 'CONFIG.py'], cwd=None, timeout=60)
    assert proc.returncode != 0
    assert 'usage: bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT' in proc.stderr


def test_slurm_launcher_trains_and_tests_in_a_one_process_group(slurm, toy_coco, tmp_path):  # noqa: F811
    env, record = slurm
    env.update(SRUN_EXECUTE='1', PYTHON=sys.executable, MASTER_PORT=str(free_port()), GPUS='1')
    unset = ('MASTER_ADDR', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK')
    work = tmp_path / 'work'
    proc = run(['bash', 'tools/slurm_train.sh', 'cpu', 'toy', DET_CFG, work, *det_options(toy_coco, iters=2)],
               env=env, unset=unset)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert 'Distributed launcher: slurm' in log and 'Distributed training: True' in log
    assert 'GPU number: 1' in log      # mmengine's name for the world size
    assert (work / 'iter_2.pth').is_file()
    assert json.loads(record.read_text())['options'][3:6] == ['--gres=gpu:1', '--ntasks=1', '--ntasks-per-node=1']

    proc = run(['bash', 'tools/slurm_test.sh', 'cpu', 'toy', DET_CFG, work / 'iter_2.pth', '--work-dir',
                tmp_path / 'test', *det_options(toy_coco)], env=env, unset=unset)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert 'Distributed launcher: slurm' in log and 'coco/bbox_mAP' in log
