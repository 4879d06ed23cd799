"""Reproducible toy training through tools/train.py (subprocesses, as a user runs it): two runs give
bit-equal weights and equal losses and metrics; a run killed with SIGKILL in the middle of an epoch
and resumed with ``--resume`` ends with the same weights as the uninterrupted run.

Tiny data and model (8 images of 96x128, batch 2 = 4 iterations per epoch; RepGhostNet 0.5x,
32-channel neck and head); the determinism comes from the toy configs themselves
(``randomness=dict(seed=0, deterministic=True)``, data read in the training process,
IterBasedTrainLoop)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rep_backbones.checkpoint import read_checkpoint
from rep_backbones.toy_data import make_toy_coco

from .helpers import ROOT, run_ok

pytestmark = [pytest.mark.slow, pytest.mark.mm, pytest.mark.tools]

CFG = 'configs/toy/toy_retinanet_repghost_1_0x.py'
ITERS, CKPT_EVERY, PER_EPOCH = 10, 3, 4     # checkpoints at 3, 6, 9: none at an epoch boundary


def train_cmd(root: Path, work: Path, *extra):
    ann = root / 'annotations' / 'instances_val2017.json'
    opts = [f'{split}_dataloader.dataset.data_root={root}/' for split in ('train', 'val', 'test')]
    opts += [f'{split}_evaluator.ann_file={ann}' for split in ('val', 'test')]
    opts += [f'train_cfg.max_iters={ITERS}', f'train_cfg.val_interval={ITERS}', 'param_scheduler.0.end=4',
             f'param_scheduler.1.end={ITERS}', f'default_hooks.checkpoint.interval={CKPT_EVERY}',
             'default_hooks.checkpoint.max_keep_ckpts=-1', 'default_hooks.logger.interval=1',
             'train_dataloader.batch_size=2', 'model.backbone.arch=0.5x', 'model.neck.in_channels=[12,20,56,80]',
             'model.neck.out_channels=32', 'model.bbox_head.in_channels=32', 'model.bbox_head.feat_channels=32',
             'model.test_cfg.score_thr=0.0']   # so that the barely trained model has detections to evaluate
    return [sys.executable, 'tools/train.py', CFG, '--work-dir', str(work), *extra, '--cfg-options', *opts]


def train(root: Path, work: Path, *extra) -> str:
    return run_ok(train_cmd(root, work, *extra), timeout=300)


def weights(path: Path) -> dict:
    return read_checkpoint(str(path))['state_dict']


def scalars(work: Path) -> dict:
    """Per-step training losses and the final validation metrics from mmengine's scalars files
    (a resumed run has one per launch; later launches win)."""
    out = {}
    for path in sorted(work.glob('*/vis_data/scalars.json')):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            step = record.pop('step')
            out.update({(key, step): value for key, value in record.items()
                        if key == 'loss' or key.startswith('coco/')})
    return out


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:3]}'


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp('toy_coco')
    make_toy_coco(root, num_train=2 * PER_EPOCH, num_val=2, image_size=(96, 128))
    return root


@pytest.fixture(scope='module')
def reference(toy, tmp_path_factory):
    """The uninterrupted run."""
    work = tmp_path_factory.mktemp('reference')
    train(toy, work)
    return work


def test_two_runs_give_bit_equal_weights_and_equal_metrics(toy, reference, tmp_path):
    train(toy, tmp_path)
    final = weights(reference / f'iter_{ITERS}.pth')
    assert_same_weights(final, weights(tmp_path / f'iter_{ITERS}.pth'))
    first = weights(reference / f'iter_{CKPT_EVERY}.pth')   # the comparison has something to compare:
    assert any(not torch.equal(first[k], final[k]) for k in final)  # training changed the weights
    ref, again = scalars(reference), scalars(tmp_path)
    assert ('loss', ITERS) in ref and any(key.startswith('coco/bbox_mAP') for key, _ in ref)
    assert ref == again


def test_killed_mid_epoch_and_resumed_ends_with_the_same_weights(toy, reference, tmp_path):
    proc = subprocess.Popen(train_cmd(toy, tmp_path), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = tmp_path / 'last_checkpoint'     # mmengine writes it after the checkpoint file is complete
    deadline = time.time() + 240
    while not pointer.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, 'the run ended before it could be killed'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / f'iter_{ITERS}.pth').exists()
    resumed_from = Path(pointer.read_text().strip()).name
    done = int(resumed_from[len('iter_'):-len('.pth')])
    assert done % PER_EPOCH, f'{resumed_from} is at an epoch boundary; the test wants a mid-epoch resume'

    log = train(toy, tmp_path, '--resume')
    assert f'Advance dataloader {done} steps' in log    # the batches already trained on are skipped
    assert_same_weights(weights(reference / f'iter_{ITERS}.pth'), weights(tmp_path / f'iter_{ITERS}.pth'))
    ref, resumed = scalars(reference), scalars(tmp_path)
    assert {k: v for k, v in ref.items() if k[1] > done} == {k: v for k, v in resumed.items() if k[1] > done}
