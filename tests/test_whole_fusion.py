"""``rep_backbones.fuse(model, whole=True)`` on every shipped detector and segmentor config, built
exactly as written (SyncBN kept, as DDP trains and ``dist_test.sh`` tests it): no BatchNorm is left
anywhere, and the whole fused model equals the training form (eval mode, random BN statistics
everywhere: backbone, FPN, heads; float64 for the algebra, float32 as deployed)."""
import copy
import glob
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData

import rep_backbones
from rep_backbones.io.build import build_model_from_config

from .helpers import assert_fusion_exact, assert_rel_close, count_norms, damp_deep_plain_backbone, randomize_bn

pytestmark = [pytest.mark.slow, pytest.mark.mm]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every model config but the flat former names (one-line stubs of these: tests/test_configs.py).
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, 'configs', '*', '*.py'))
                 + glob.glob(os.path.join(ROOT, 'configs', '*', 'deploy', '*.py'))
                 if os.path.relpath(p, os.path.join(ROOT, 'configs')).split(os.sep)[0]
                 not in ('_base_', 'mmdeploy', 'deploy'))
IDS = [os.path.relpath(p, os.path.join(ROOT, 'configs')) for p in CONFIGS]
ODD_INPUT = (1, 3, 83, 117)


def test_every_config_folder_is_covered():
    folders = {i.split(os.sep)[0] for i in IDS}
    assert {'repghostnet', 'repghostnetv2', 'mobilenetv4', 'repnext', 'repmobile', 'timm_comparators',
            'toy'} <= folders
    assert sum(f'{os.sep}deploy{os.sep}' in i for i in IDS) >= 40


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


@pytest.mark.parametrize('config', CONFIGS, ids=IDS)
def test_config_fuses_as_trained(config):
    """SyncBN where the config says SyncBN (nothing converted for the CPU), then ``fuse(whole=True)``."""
    model = build_model_from_config(config, keep_sync_bn=True)
    if 'SyncBN' in str(Config.fromfile(config).model) and count_norms(model):
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
        # training configs check in float64 too; float32 here keeps the 44 of them cheap.
        with torch.no_grad():
            assert_rel_close(forward(model, x), forward(fused, x))
    else:
        assert_fusion_exact(model, fused, x, fuse, forward=forward)


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
