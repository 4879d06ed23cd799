"""``rep_backbones.fuse(model, whole=True)``: no BatchNorm left anywhere in any shipped detector or
segmentor config, and the whole fused model equals the training form (eval mode, random BN
statistics everywhere: backbone, FPN, heads)."""
import copy
import glob
import os

import pytest
import torch
from mmengine.structures import InstanceData

import rep_backbones
from rep_backbones.apis.build import build_model_from_config

from .helpers import assert_fusion_exact, count_norms, damp_deep_plain_backbone, randomize_bn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, 'configs', '*', '*.py'))
                 if os.path.basename(os.path.dirname(p)) not in ('_base_', 'toy', 'mmdeploy'))
IDS = [os.path.relpath(p, os.path.join(ROOT, 'configs')) for p in CONFIGS]


def test_every_config_folder_is_covered():
    families = {os.path.dirname(i) for i in IDS}
    assert {'repghostnet', 'repghostnetv2', 'mobilenetv4', 'repnext', 'repmobile'} <= families


@pytest.mark.parametrize('config', CONFIGS, ids=IDS)
def test_whole_fusion_leaves_no_batchnorm(config):
    model = build_model_from_config(config)
    report = rep_backbones.fuse_with_report(model, whole=True)
    assert report.norms_left == [] and count_norms(model) == 0, report.norms_left[:5]


def _two_stage_forward(model, x):
    """Backbone + neck + RPN head + RoI heads on fixed proposals (post-processing-free, so that the
    comparison is about the tensors, not about NMS ties)."""
    feats = model.extract_feat(x)
    h, w = x.shape[-2:]
    boxes = torch.tensor([[0, 0, w / 2, h / 2], [w / 4, h / 4, w - 1, h - 1], [2, 3, 30, 40]], dtype=x.dtype)
    proposals = [InstanceData(bboxes=boxes) for _ in range(x.shape[0])]
    return feats, model.rpn_head(feats), model.roi_head.forward(feats, proposals)


@pytest.mark.parametrize('config,kind', [
    ('repmobile/mask-rcnn_repmobile-l_fpn_1x_coco.py', 'two-stage'),   # SyncBN in FPN and RoI heads
    ('repmobile/retinanet_repmobile-s_fpn_1x_coco.py', 'tensor'),
    ('repghostnet/fpn_repghostnet-1.0x_8xb4-40k_ade20k-512x512.py', 'tensor'),
    ('repmobile/fpn_repmobile-l_8xb4-40k_ade20k-512x512.py', 'tensor'),
])
def test_whole_fused_model_equals_training_form(config, kind):
    path = os.path.join(ROOT, 'configs', config)
    if not os.path.exists(path):
        pytest.fail(f'{config} is not a shipped config any more: update this test')
    model = build_model_from_config(path).eval()
    randomize_bn(damp_deep_plain_backbone(model)).eval()
    x = torch.randn(1, 3, 96, 128)
    forward = _two_stage_forward if kind == 'two-stage' else (lambda m, inp: m(inp, mode='tensor'))
    fused = rep_backbones.fuse(copy.deepcopy(model), whole=True)
    assert count_norms(fused) == 0
    assert_fusion_exact(model, fused, x, lambda m: rep_backbones.fuse(m, whole=True), forward=forward)


def test_whole_fused_checkpoint_loads_into_the_deploy_structure(tmp_path):
    """tools/fuse_checkpoint.py --whole: the file loads strictly into the deploy config's model with the
    necks' / heads' pairs folded (what tools/test.py --whole-fused builds) and computes the same."""
    from rep_backbones.apis.fused_checkpoint import build_deploy_model, fuse_checkpoint
    from rep_backbones.checkpoint import read_checkpoint
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
