"""Every config in configs/ builds its model and runs one forward pass; placeholders fail clearly."""
import glob
import os

import pytest
import torch
from mmengine.config import Config

from rep_backbones.checkpoint import CheckpointError
from rep_backbones.mm.build import build_model_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if f'{os.sep}_base_{os.sep}' not in p)


def _id(path):
    return os.path.relpath(path, os.path.join(ROOT, 'configs'))


def _detector_batch(n=1, size=(3, 96, 128)):
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(n, [list(size)] * n, use_box_type=True)


@pytest.mark.parametrize('path', CONFIGS, ids=_id)
def test_config_builds_and_runs_a_forward_pass(path):
    cfg = Config.fromfile(path)
    assert 'rep_backbones' in cfg.custom_imports['imports']
    model = build_model_from_config(path)
    backbone = model.backbone
    assert list(model.neck.in_channels) == backbone.out_channels
    assert backbone.deploy == ('/deploy/' in path.replace(os.sep, '/'))
    with torch.no_grad():
        if cfg.default_scope == 'mmdet':
            results = model.test_step(_detector_batch())
            assert len(results) == 1 and hasattr(results[0], 'pred_instances')
        else:
            logits = model(torch.randn(1, 3, 96, 128), mode='tensor')
            assert logits.shape[:2] == (1, cfg.model.decode_head.num_classes)


PRETRAINED = [p for p in CONFIGS if '/toy/' not in p.replace(os.sep, '/') and '/deploy/' not in p.replace(os.sep, '/')]


@pytest.mark.parametrize('path', PRETRAINED[:1] + [p for p in PRETRAINED if 'mask_rcnn_repghost_1_3x' in p], ids=_id)
def test_missing_pretrained_file_stops_with_its_path(path, tmp_path, monkeypatch):
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(path)
    checkpoint = cfg.model.backbone.init_cfg.checkpoint
    assert checkpoint.startswith('pretrained/')
    monkeypatch.chdir(tmp_path)
    registry = __import__(f'{cfg.default_scope}.registry', fromlist=['MODELS']).MODELS
    __import__(f'{cfg.default_scope}.utils', fromlist=['x']).register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = registry.build(cfg.model)
    with pytest.raises(CheckpointError, match=f"'{checkpoint}' not found"):
        model.init_weights()


@pytest.mark.parametrize('scope,base', [
    ('mmdet', 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'),
    ('mmseg', 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'),
])
def test_existing_project_needs_only_custom_imports(tmp_path, scope, base):
    """An mm project config that knows nothing of this repo: custom_imports + backbone type."""
    cfg_file = tmp_path / 'my_config.py'
    cfg_file.write_text(
        f"_base_ = ['{base}']\n"
        "custom_imports = dict(imports=['rep_backbones'], allow_failed_imports=False)\n"
        "model = dict(backbone=dict(_delete_=True, type='RepGhostNet', arch='1.0x'),\n"
        + ("             pretrained=None,  # mmseg passes model.pretrained to the backbone\n" if scope == 'mmseg' else '')
        +
        "             neck=dict(in_channels=[24, 40, 112, 160]))\n")
    model = build_model_from_config(str(cfg_file))
    assert type(model.backbone).__name__ == 'RepGhostNet'
