"""Each family's representative variants (``representative_archs``) inside a real mmdet detector (the toy
RetinaNet config): it trains (every backbone parameter receives a gradient, so DDP needs no find_unused_parameters),
and the fused detector's raw head outputs equal the training form's (BN statistics measured on the
input, random affine parameters): exactly in float64, and in float32 within the training form's own
float32 error (``assert_fusion_exact``). Measured on RepMobile-S, the case that once failed a flat
1e-3: float64 fusion error 6e-12 (exact), while a 1e-7 input perturbation moves the float64 training
form by 1.3e-3 at stride 16 -- calibrated BN statistics leave channels with variance ~1e-8 (gain up to
~400), so float32 rounding is amplified the same way in both forms.

Every other variant keeps the same two properties in tests/test_backbone_contract.py, on the backbone
alone: a gradient for every parameter, and exact fusion at an odd size (the detector adds necks and heads
that are the same for every variant)."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper

import rep_backbones
from rep_backbones.io.build import build_model_from_config
from rep_backbones.models import BACKBONES
from rep_backbones.models.registry import family_specs

from .helpers import assert_fusion_exact, calibrate_bn, damp_deep_plain_backbone

pytestmark = [pytest.mark.slow, pytest.mark.mm]

TOY_RETINANET = 'configs/toy/toy_retinanet_repghost_1_0x.py'
# The package's families; TimmRepBackbone does the same in the toy RetinaNet in tests/test_timm_backbone.py.
VARIANTS = [tuple(spec.split(':')) for spec in family_specs(sorted(n for n in BACKBONES if n != 'TimmRepBackbone'))]


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
    calibrate_bn(damp_deep_plain_backbone(model.backbone), inputs)
    model.eval()
    fused = rep_backbones.fuse(copy.deepcopy(model))
    with torch.no_grad():
        assert len(fused.test_step(_batch())) == 2  # post-processing runs on the fused model
    assert fused.backbone.deploy
    # raw head outputs (scores and box deltas per level)
    assert_fusion_exact(model, fused, inputs, rep_backbones.fuse, forward=lambda m, x: m(x, mode='tensor'))
