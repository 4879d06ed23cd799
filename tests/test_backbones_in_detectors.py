"""Every variant of every registered family inside a real mmdet detector (the toy RetinaNet config):
it trains (every backbone parameter receives a gradient, so DDP needs no find_unused_parameters),
and the fused detector's raw head outputs equal the training form's (BN statistics measured on the
input, random affine parameters)."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper

import rep_backbones
from rep_backbones.models import BACKBONES
from rep_backbones.apis.build import build_model_from_config

from .helpers import calibrate_bn

TOY_RETINANET = 'configs/toy/toy_retinanet_repghost_1_0x.py'
VARIANTS = [(name, arch) for name, cls in sorted(BACKBONES.items()) for arch in cls.arch_settings]


def _batch():
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(2, [[3, 97, 131], [3, 97, 131]], num_items=[3, 2], num_classes=4, use_box_type=True)


@pytest.mark.parametrize('name,arch', VARIANTS, ids=[f'{n}-{a}' for n, a in VARIANTS])
def test_variant_trains_and_fuses_inside_retinanet(name, arch):
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model = build_model_from_config(os.path.join(root, TOY_RETINANET), backbone=dict(type=name, arch=arch))
    model.train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3))
    data = model.data_preprocessor(_batch(), True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    loss.backward()
    unused = [n for n, p in model.backbone.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f'backbone parameters without gradient (DDP would fail): {unused[:5]}'
    optim.step()

    inputs = model.data_preprocessor(_batch(), False)['inputs']
    calibrate_bn(model.backbone, inputs)
    model.eval()
    with torch.no_grad():
        ref = model(inputs, mode='tensor')          # raw head outputs: scores and box deltas per level
        fused = rep_backbones.fuse(copy.deepcopy(model))
        out = fused(inputs, mode='tensor')
        assert len(fused.test_step(_batch())) == 2  # post-processing runs on the fused model
    assert fused.backbone.deploy
    for a, b in zip(_flatten(ref), _flatten(out)):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= 1e-3 * a.abs().max(), f'{name} {arch}: fused head outputs differ'


def _flatten(outputs):
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for item in outputs for t in _flatten(item)]
