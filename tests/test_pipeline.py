"""The toy pipeline through the real tools: train, test with and without fusion, fuse the checkpoint,
deploy config, distributed CPU training, and mim. Small data and schedules; the tools/*.py scripts run as a
user runs them, in this process (tests.helpers.run_tool: no interpreter start-up each); the shell script, mim
and the wheel install in new processes, as they need them."""
import json
import os
import pickle
import sys

import pytest
import torch

from rep_backbones.toy_data import make_toy_ade20k, make_toy_coco

from .helpers import ROOT, assert_rel_close, build_wheel, free_port, require_mim, run_ok, run_tool, run_tool_ok

pytestmark = [pytest.mark.slow, pytest.mark.mm, pytest.mark.tools]

PY = sys.executable
DET_CFG = 'configs/toy/toy_mask_rcnn_repghost_1_0x.py'
SEG_CFG = 'configs/toy/toy_fpn_repghost_1_0x_ade20k.py'


def det_options(root, iters=4):
    """--cfg-options pointing the toy config at ``root`` with a tiny schedule (``iters`` iterations)."""
    ann = os.path.join(root, 'annotations', 'instances_{}2017.json')
    return ['--cfg-options', f'train_dataloader.dataset.data_root={root}/', f'val_dataloader.dataset.data_root={root}/',
            f'test_dataloader.dataset.data_root={root}/', f'val_evaluator.ann_file={ann.format("val")}',
            f'test_evaluator.ann_file={ann.format("val")}', f'train_cfg.max_iters={iters}',
            f'train_cfg.val_interval={iters}', f'default_hooks.checkpoint.interval={iters}',
            'train_dataloader.batch_size=2', 'model.backbone.arch=0.5x',
            # SGD at full rate from the first iteration: after a few iterations the RPN separates
            # objects from background, so that proposals (and the metrics) are not decided by near-ties
            'optim_wrapper.optimizer.type=SGD', 'optim_wrapper.optimizer.lr=0.02',
            'optim_wrapper.optimizer.momentum=0.9', 'optim_wrapper.optimizer.weight_decay=0.0001',
            'param_scheduler.0.end=1',
            'model.neck.in_channels=[12,20,56,80]']


@pytest.fixture(scope='module')
def toy_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp('toy_coco')
    make_toy_coco(str(root), num_train=8, num_val=4, image_size=(128, 160))
    return str(root)


@pytest.fixture(scope='module')
def trained_det(toy_coco, tmp_path_factory):
    work = tmp_path_factory.mktemp('det')
    run_tool_ok('tools/train.py', DET_CFG, '--work-dir', work, *det_options(toy_coco, iters=32))
    assert os.path.isfile(work / 'iter_32.pth')
    return work


def _test(cfg, ckpt, work, toy_coco, *extra):
    out, dump = work / f'metrics{len(extra)}.json', work / f'pred{len(extra)}.pkl'
    log = run_tool_ok('tools/test.py', cfg, ckpt, '--work-dir', work, '--out-json', out, '--dump', dump, *extra,
                      *det_options(toy_coco))
    with open(dump, 'rb') as f:
        predictions = pickle.load(f)    # our own file, written by this test
    return json.load(open(out)), predictions, log


def _scores(predictions):
    return [p['pred_instances']['scores'][:20] for p in predictions]


@pytest.fixture(scope='module')
def plain_test(trained_det, toy_coco):
    """tools/test.py --no-fuse on the trained checkpoint: the training form's metrics and predictions."""
    metrics, predictions, log = _test(DET_CFG, trained_det / 'iter_32.pth', trained_det, toy_coco, '--no-fuse')
    assert 'RepFuseHook' not in log
    return metrics, predictions


def test_test_with_and_without_fusion_agree(trained_det, toy_coco, plain_test):
    ckpt = trained_det / 'iter_32.pth'
    plain, plain_pred = plain_test
    fused, fused_pred, log = _test(DET_CFG, ckpt, trained_det, toy_coco)
    assert 'RepFuseHook (test): fused backbone' in log and 'fused vs training form on the first batch' in log
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'):
        assert fused[key] == pytest.approx(plain[key], abs=1e-3)
    # The metrics of a briefly trained model are small; the raw predictions are the sharp check.
    for a, b in zip(_scores(plain_pred), _scores(fused_pred)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)
    assert sum(len(s) for s in _scores(plain_pred)) > 0


def test_fused_checkpoint_loads_into_deploy_config(trained_det, toy_coco, plain_test, tmp_path):
    fused_ckpt = tmp_path / 'fused.pth'
    log = run_tool_ok('tools/fuse_checkpoint.py', DET_CFG, trained_det / 'iter_32.pth', fused_ckpt,
                      '--cfg-options', 'model.backbone.arch=0.5x', 'model.neck.in_channels=[12,20,56,80]')
    assert 'fused backbone' in log and 'loads strictly' in log
    deploy_cfg = tmp_path / 'deploy.py'
    deploy_cfg.write_text(f"_base_ = [{os.path.join(ROOT, DET_CFG)!r}]\nmodel = dict(backbone=dict(deploy=True))\n")
    plain, plain_pred = plain_test
    deploy, deploy_pred, log = _test(str(deploy_cfg), fused_ckpt, tmp_path, toy_coco)
    assert 'already in deploy form' in log
    assert deploy['coco/bbox_mAP'] == pytest.approx(plain['coco/bbox_mAP'], abs=1e-3)
    for a, b in zip(_scores(plain_pred), _scores(deploy_pred)):
        assert torch.allclose(a, b, atol=1e-4)
    # a training checkpoint in the deploy config is refused, not silently half-loaded
    result = run_tool('tools/test.py', deploy_cfg, trained_det / 'iter_32.pth', *det_options(toy_coco))
    assert result.returncode != 0 and 'train-form checkpoint but the model is in deploy form' in result.stderr


def test_distributed_cpu_training_with_two_processes(toy_coco, tmp_path):
    log = run_ok(['bash', 'tools/dist_train.sh', DET_CFG, '2', '--work-dir', str(tmp_path),
                  *det_options(toy_coco, iters=4)], env={'PYTHON': PY, 'PORT': str(free_port())})
    assert 'no CUDA: gloo process group' in log
    assert os.path.isfile(tmp_path / 'iter_4.pth')


def test_segmentation_toy_train_and_fused_test(tmp_path):
    root = tmp_path / 'ade'
    make_toy_ade20k(str(root), num_train=4, num_val=2, image_size=(96, 128))
    opts = ['--cfg-options', f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}', 'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
            'default_hooks.checkpoint.interval=4', 'train_dataloader.batch_size=2']
    run_tool_ok('tools/train.py', SEG_CFG, '--work-dir', tmp_path, *opts)
    metrics, logits, logs = {}, {}, {}
    for name, extra in [('plain', ['--no-fuse']), ('fused', [])]:
        out, dump = tmp_path / f'{name}.json', tmp_path / f'{name}.pkl'
        logs[name] = run_tool_ok('tools/test.py', SEG_CFG, tmp_path / 'iter_4.pth', '--work-dir', tmp_path,
                                 '--out-json', out, '--out', dump, *extra, *opts)
        metrics[name] = json.load(open(out))
        with open(dump, 'rb') as f:
            logits[name] = [p['seg_logits']['data'] for p in pickle.load(f)]    # our own file, written just now
    assert 'RepFuseHook (test): fused backbone' in logs['fused'] and 'RepFuseHook' not in logs['plain']
    assert metrics['fused']['mIoU'] == pytest.approx(metrics['plain']['mIoU'], abs=1e-3)
    # mIoU after 4 iterations is near 0 either way; the per-pixel logits are the sharp check
    assert len(logits['plain']) == 2
    assert_rel_close(logits['plain'], logits['fused'], what='segmentation logits')


def test_mim_finds_configs_and_tools(trained_det, toy_coco, tmp_path):
    """`mim test rep_backbones NAME` resolves the config by name and runs our tools/test.py, from any
    directory; `mim test mmdet CONFIG` runs mmdet's own test script on our config."""
    mim = require_mim()
    ckpt = str(trained_det / 'iter_32.pth')
    log = run_ok([mim, 'test', 'rep_backbones', os.path.basename(DET_CFG), '--checkpoint', ckpt,
               '--work-dir', str(tmp_path / 'a'), *det_options(toy_coco)], cwd=str(tmp_path))
    assert "we find the config file in codebase rep_backbones" in log and 'coco/bbox_mAP' in log
    log = run_ok([mim, 'test', 'mmdet', os.path.join(ROOT, DET_CFG), '--checkpoint', ckpt,
               '--work-dir', str(tmp_path / 'b'), *det_options(toy_coco)], cwd=str(tmp_path))
    assert 'RepFuseHook (test): fused backbone' in log and 'coco/bbox_mAP' in log


def test_mim_with_a_wheel_install(trained_det, toy_coco, tmp_path):
    """The same lookup when the package is installed from its wheel (configs/tools copied into .mim)."""
    mim = require_mim()
    wheel = build_wheel(tmp_path / 'build')
    target = tmp_path / 'site'
    run_ok([PY, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(target), str(wheel)])
    assert (target / 'rep_backbones' / '.mim' / 'configs' / 'toy' / os.path.basename(DET_CFG)).is_file()
    log = run_ok([mim, 'test', 'rep_backbones', os.path.basename(DET_CFG),
               '--checkpoint', str(trained_det / 'iter_32.pth'), '--work-dir', str(tmp_path / 'w'),
               *det_options(toy_coco)], cwd=str(tmp_path),
              env={'PYTHONPATH': str(target)})
    assert str(target / 'rep_backbones' / '.mim' / 'tools' / 'test.py') in log and 'coco/bbox_mAP' in log

