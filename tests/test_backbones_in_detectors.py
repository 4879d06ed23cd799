"""Every variant of every registered family inside a real mmdet detector (the toy RetinaNet config):
it trains (every backbone parameter receives a gradient, so DDP needs no find_unused_parameters),
and the fused detector predicts what the training-form detector predicts."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper

import rep_backbones
from rep_backbones.models import BACKBONES
from rep_backbones.mm.build import build_model_from_config

from .helpers import randomize_bn

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

    randomize_bn(model.backbone)
    model.eval()
    with torch.no_grad():
        ref = model.test_step(_batch())
        fused = rep_backbones.fuse(copy.deepcopy(model))
        out = fused.test_step(_batch())
    assert fused.backbone.deploy
    for a, b in zip(ref, out):
        sa, sb = a.pred_instances.scores, b.pred_instances.scores
        n = min(len(sa), len(sb), 20)
        assert n > 0 and torch.allclose(sa[:n], sb[:n], atol=1e-4, rtol=1e-3)
