"""``rep_backbones.fuse(model, whole=True)`` on the shipped detector and segmentor configs, built exactly
as written (SyncBN kept, as DDP trains and ``dist_test.sh`` tests it): no BatchNorm is left anywhere, the
whole fused model equals the training form (eval mode, random BN statistics everywhere: backbone, FPN,
heads; float64 for the algebra, float32 as deployed), and both forms run the test step with its
post-processing.

One config per (family folder, task, backbone) runs here, with the family's representative variant where
it has a config: the configs of one family and task differ only in the variant, whose fusion every
variant's contract test checks (tests/test_backbone_contract.py), and in the neck widths, which
tests/test_configs.py checks for every config against the backbone built from it. Likewise one deploy
config per task: a deploy config is its training sibling with the backbone built fused (also checked
there for every config)."""
import copy
import glob
import os
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData

import rep_backbones
from rep_backbones.io.build import build_model_from_config
from rep_backbones.models.registry import BACKBONES

from .helpers import (
    assert_fusion_exact,
    assert_rel_close,
    assert_test_step_runs,
    count_norms,
    damp_deep_plain_backbone,
    randomize_bn,
)

pytestmark = [pytest.mark.slow, pytest.mark.mm]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, 'configs')
# Every model config but the flat former names (one-line stubs of these: tests/test_configs.py).
ALL_CONFIGS = sorted(
    os.path.relpath(p, CONFIG_DIR).replace(os.sep, '/')
    for p in glob.glob(os.path.join(CONFIG_DIR, '*', '*.py'))
    + glob.glob(os.path.join(CONFIG_DIR, '*', 'deploy', '*.py'))
    if os.path.relpath(p, CONFIG_DIR).split(os.sep)[0] not in ('_base_', 'mmdeploy', 'deploy'))
ODD_INPUT = (1, 3, 83, 117)


TASKS = ('retinanet', 'mask-rcnn', 'fpn')


def _task(config):
    name = os.path.basename(config).replace('mask_rcnn', 'mask-rcnn')
    return next(task for task in TASKS if task in name)


def _backbone(config):
    """The timm model a comparator config wraps, else the family folder."""
    model_name = re.search(r"model_name='([^']+)'", open(os.path.join(CONFIG_DIR, config)).read())
    return model_name.group(1) if model_name else config.split('/')[0]


def _representatives():
    """Per (folder, task, backbone): the config of the family's representative variant
    (``representative_archs``) where there is one, else the first. Per folder, one deploy config, the
    task taking turns across the folders."""
    archs = {name.lower(): [a.lower() for a in getattr(cls, 'representative_archs', ())]
             for name, cls in BACKBONES.items()}
    folders = sorted({c.split('/')[0] for c in ALL_CONFIGS})
    chosen = {}
    for config in ALL_CONFIGS:
        folder, task = config.split('/')[0], _task(config)
        representative = any(f'_{folder}-{arch}_' in config for arch in archs.get(folder, ()))
        if '/deploy/' in config:
            key = ('deploy', folder)
            score = (task == TASKS[folders.index(folder) % len(TASKS)], representative)
        else:
            key, score = (folder, task, _backbone(config)), (representative,)
        if key not in chosen or score > chosen[key][1]:
            chosen[key] = (config, score)
    return sorted(config for config, _ in chosen.values())


CONFIGS = _representatives()


def test_every_folder_task_and_backbone_is_covered():
    training = [c for c in ALL_CONFIGS if '/deploy/' not in c]
    assert {(c.split('/')[0], _task(c), _backbone(c)) for c in CONFIGS if '/deploy/' not in c} == \
        {(c.split('/')[0], _task(c), _backbone(c)) for c in training}
    deploy = [c for c in CONFIGS if '/deploy/' in c]
    assert {c.split('/')[0] for c in deploy} == {c.split('/')[0] for c in ALL_CONFIGS if '/deploy/' in c}
    assert {_task(c) for c in deploy} == set(TASKS)
    # the family's representative variant, where the family has a config of it
    for config in ('repghostnet/retinanet_repghostnet-1.0x_fpn_1x_coco.py',
                   'mobilenetv4/mask-rcnn_mobilenetv4-s_fpn_1x_coco.py',
                   'repmobile/retinanet_repmobile-s_fpn_1x_coco.py'):
        assert config in CONFIGS
    assert len(CONFIGS) < len(ALL_CONFIGS) / 2


def _two_stage_forward(model, x):
    """Backbone + neck + RPN head + RoI heads on fixed proposals (post-processing-free, so that the
    comparison is about the tensors, not about NMS ties)."""
    feats = model.extract_feat(x)
    h, w = x.shape[-2:]
    boxes = torch.tensor([[0, 0, w / 2, h / 2], [w / 4, h / 4, w - 1, h - 1], [2, 3, 30, 40]], dtype=x.dtype)
    proposals = [InstanceData(bboxes=boxes) for _ in range(x.shape[0])]
    return feats, model.rpn_head(feats), model.roi_head.forward(feats, proposals)


def _tensor_forward(model, x):
    return model(x, mode='tensor')


@pytest.mark.parametrize('config', CONFIGS)
def test_config_fuses_as_trained(config):
    """SyncBN where the config says SyncBN (nothing converted for the CPU), then ``fuse(whole=True)``."""
    path = os.path.join(CONFIG_DIR, config)
    cfg = Config.fromfile(path)
    model = build_model_from_config(cfg, keep_sync_bn=True)
    if 'SyncBN' in str(cfg.model) and count_norms(model):
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    randomize_bn(damp_deep_plain_backbone(model)).eval()
    fuse = lambda m: rep_backbones.fuse(m, whole=True)  # noqa: E731
    fused = fuse(copy.deepcopy(model))
    report = rep_backbones.fuse_with_report(fused, whole=True)
    assert report.norms_left == [] and count_norms(fused) == 0, report.norms_left[:5]
    forward = _two_stage_forward if hasattr(model, 'roi_head') else _tensor_forward
    x = torch.randn(ODD_INPUT)
    if model.backbone.deploy:
        # Deploy configs: only the necks' and heads' conv+BN pairs are left to fold, the path that the
        # training configs check in float64 too.
        with torch.no_grad():
            assert_rel_close(forward(model, x), forward(fused, x))
    else:
        assert_fusion_exact(model, fused, x, fuse, forward=forward)
    for form in (model, fused):
        assert_test_step_runs(form)


def test_whole_fused_checkpoint_loads_into_the_deploy_structure(tmp_path):
    """tools/fuse_checkpoint.py --whole: the file loads strictly into the deploy config's model with the
    necks' / heads' pairs folded (what tools/test.py --whole-fused builds) and computes the same."""
    from rep_backbones.checkpoint import read_checkpoint
    from rep_backbones.deploy.fused_checkpoint import build_deploy_model, fuse_checkpoint
    config = os.path.join(ROOT, 'configs', 'toy', 'toy_retinanet_repghost_1_0x.py')
    options = {'model.backbone.arch': '0.5x', 'model.neck.in_channels': [12, 20, 56, 80],
               'model.neck.norm_cfg': dict(type='BN'), 'model.bbox_head.norm_cfg': dict(type='BN')}
    model = randomize_bn(build_model_from_config(config, None, cfg_options=options)).eval()
    assert count_norms(model.neck) > 0 and count_norms(model.bbox_head) > 0
    src, dst = tmp_path / 'trained.pth', tmp_path / 'fused.pth'
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, src)
    summary = fuse_checkpoint(config, str(src), str(dst), options, whole=True)
    assert 'no BatchNorm left' in summary
    deploy = build_deploy_model(config, options, whole=True).eval()
    deploy.load_state_dict(read_checkpoint(str(dst))['state_dict'], strict=True)
    assert count_norms(deploy) == 0
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref, out = model(x, mode='tensor'), deploy(x, mode='tensor')
    for a, b in zip([t for level in ref for t in level], [t for level in out for t in level]):
        assert (a - b).abs().max() <= 1e-4 * a.abs().max()
