"""TimmRepBackbone: timm comparators as fusable 4-scale backbones (rep_backbones/models/timm_backbone.py).

Every tested model: four maps at strides 4/8/16/32, fused form equal to the training form at an odd
size with random BN statistics and no BatchNorm left, fused weights loading into ``deploy=True``;
the feature picks against an independent per-block trace of timm's own model; errors; freezing and
norm_eval; timm checkpoint files; SyncBN conversions; the comparator configs; the toy RetinaNet.
"""
import copy
import glob
import math
import os

import pytest
import timm
import torch
from timm.utils.model import reparameterize_model
from torch import nn

import rep_backbones
from rep_backbones.checkpoint import CheckpointError
from rep_backbones.models import TimmRepBackbone, build_backbone
from rep_backbones.models.timm_backbone import _dropped_activation

from .helpers import FUSE_RTOL, assert_fuses_exactly, assert_test_step_runs, count_norms, randomize_bn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ODD = (97, 131)
TESTED = list(TimmRepBackbone.arch_settings)


def _input(seed=0, size=ODD, batch=1):
    torch.manual_seed(seed)
    return torch.randn(batch, 3, *size)


@pytest.mark.parametrize('name', TESTED)
def test_four_maps_and_exact_fusion(name):
    model = build_backbone('TimmRepBackbone', model_name=name)
    x = _input()
    with torch.no_grad():
        outs = model.eval()(x)
    assert [f['reduction'] for f in model.feature_info[:4]] == [4, 8, 16, 32]
    assert len(outs) == 4 and model.out_strides == [4, 8, 16, 32]
    for out, chs, stride in zip(outs, model.out_channels, model.out_strides):
        assert out.shape == (1, chs, math.ceil(ODD[0] / stride), math.ceil(ODD[1] / stride))

    fused = assert_fuses_exactly(model, x)            # random BN statistics, max|diff| <= 1e-4 max|out|
    assert fused.deploy and count_norms(fused) == 0
    # timm's own walk over a model holding the backbone gives the same fused backbone
    walked = reparameterize_model(nn.Sequential(model))[0]
    assert walked.deploy and walked.state_dict().keys() == fused.state_dict().keys()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(walked(x), fused(x)))
    assert model.state_dict_form(model.state_dict()) == 'train'
    assert model.state_dict_form(fused.state_dict()) == 'deploy'
    # the fused weights load strictly into a model built in deploy form, with the same outputs
    deployed = TimmRepBackbone(model_name=name, deploy=True)
    deployed.load_backbone_state_dict(fused.state_dict())
    with torch.no_grad():
        for a, b in zip(fused(x), deployed.eval()(x)):
            assert torch.equal(a, b)


@pytest.mark.parametrize('name,what', [
    ('tf_mobilenetv3_small_minimal_100', 'Conv2dSame'),   # TF "same" padding computed per input size
    ('mixnet_s', 'MixedConv2d'),                          # one conv per kernel size on channel slices
    ('resnet50d', 'Sequential'),                          # deep stem conv1 = Sequential(..., conv), then bn1
    ('fastvit_sa12', 'AttentionBlock'),                   # BN before attention: folded into qkv (Linear)
])
def test_other_conv_layouts_fold_exactly(name, what):
    model = TimmRepBackbone(model_name=name)
    if what == 'Sequential':
        assert ('conv1.6', 'bn1') in model.conv_bn_pairs()
    else:
        assert any(type(m).__name__ == what for m in model.modules())
    fused = assert_fuses_exactly(model, _input())
    assert count_norms(fused) == 0
    if what in ('Conv2dSame', 'MixedConv2d'):
        assert any(type(m).__name__ == what for m in fused.modules())   # folded in place, class kept


def _block_outputs(model: TimmRepBackbone, x):
    """Independent of the backbone's own trace: timm's whole model with the backbone's weights and
    the output of every ``blocks.N`` recorded during its ``forward_features``."""
    ref = timm.create_model(model.model_name).eval()
    missing, _ = ref.load_state_dict(model.state_dict(), strict=False)
    assert not [k for k in missing if not model.is_head_key(k)]
    outs = {}
    for i, block in enumerate(ref.blocks):
        block.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o))
    with torch.no_grad():
        ref.forward_features(x)
    return [outs[i] for i in range(len(ref.blocks))]


@pytest.mark.parametrize('name,timm_s16,ours_s16,timm_s32,ours_s32', [
    ('ghostnetv2_100', 'blocks.5', 'blocks.6', 'blocks.7', 'blocks.8'),
    ('mobilenetv3_large_100', 'blocks.4', 'blocks.4', 'blocks.6', 'blocks.5'),
])
def test_deepest_block_at_each_stride_not_timms_pick(name, timm_s16, ours_s16, timm_s32, ours_s32):
    model = randomize_bn(build_backbone('TimmRepBackbone', model_name=name)).eval()
    timm_modules = {f['reduction']: f['module'] for f in timm.create_model(name).feature_info}
    assert (timm_modules[16], timm_modules[32]) == (timm_s16, timm_s32)      # timm's features_only picks
    x = _input(size=(128, 128))
    blocks = _block_outputs(model, x)
    stride = [128 // out.shape[-1] for out in blocks]
    head = len(blocks) - 1                 # the final 1x1 expansion conv, stride 32 like the block before it
    deepest = {s: i for i, s in enumerate(stride[:head])}
    names = [f['module'] for f in model.feature_info]
    assert names == [f'blocks.{deepest[s]}' for s in (4, 8, 16, 32)] + [f'blocks.{head}']
    assert names[2:4] == [ours_s16, ours_s32]
    with torch.no_grad():
        outs = model(x)
    for out, s in zip(outs, (4, 8, 16, 32)):
        assert torch.equal(out, blocks[deepest[s]])
    # the expansion conv (timm's stride-32 feature for MobileNetV3) is feature 4, built only when asked
    # for: otherwise its weights would never get a gradient
    assert not any(k.startswith(f'blocks.{head}.') for k in model.state_dict())
    with_head = TimmRepBackbone(model_name=name, out_indices=(3, 4))
    assert with_head.out_channels[1] == blocks[head].shape[1] and with_head.out_strides == [32, 32]
    assert any(k.startswith(f'blocks.{head}.') for k in with_head.state_dict())
    assert_fuses_exactly(with_head, _input())


def test_stride32_map_equals_timm_forward_features():
    """MobileOne's last stage is timm's forward_features output (its final_conv is an Identity)."""
    model = randomize_bn(TimmRepBackbone(model_name='mobileone_s0')).eval()
    ref = timm.create_model('mobileone_s0').eval()
    ref.load_state_dict(model.state_dict(), strict=False)
    x = _input()
    with torch.no_grad():
        assert torch.equal(model(x)[3], ref.forward_features(x))


# -- errors ------------------------------------------------------------------------------------------
class _NoFeatureInfo(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)

    def forward_features(self, x):
        return self.conv(x)


class _BnRegisteredFirst(nn.Module):
    """Registration order != data flow: ``bn1`` is registered before the conv it normalizes and
    ``forward_features`` runs ``conv_stem`` first. An order-based tap/fuser would get this wrong."""

    def __init__(self, **kwargs):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(8)
        self.conv_stem = nn.Conv2d(3, 8, 3, 4, 1)
        self.stages = nn.Sequential(*[nn.Conv2d(8, 8, 3, 2, 1) for _ in range(3)])
        self.feature_info = [dict(module='conv_stem', num_chs=8, reduction=4)] + [
            dict(module=f'stages.{i}', num_chs=8, reduction=8 * 2 ** i) for i in range(3)]

    def forward_features(self, x):
        return self.stages(self.bn1(self.conv_stem(x)))


def _register(fn_name, cls):
    from timm.models import register_model
    if not timm.is_model(fn_name):
        fn = lambda pretrained=False, **kwargs: cls(**kwargs)  # noqa: E731
        fn.__name__ = fn_name
        fn.__module__ = __name__
        register_model(fn)


def test_clear_errors():
    with pytest.raises(ValueError, match='needs model_name'):
        TimmRepBackbone()
    with pytest.raises(ValueError, match="'mobileone_s9' is not a timm model; did you mean"):
        TimmRepBackbone(model_name='mobileone_s9')
    with pytest.raises(ValueError, match='differ'):
        TimmRepBackbone(model_name='mobileone_s0', arch='repvgg_a0')
    with pytest.raises(ValueError, match='init_cfg'):
        TimmRepBackbone(model_name='mobileone_s0', pretrained=True)
    with pytest.raises(ValueError, match=r'strides \[16\]; .*at least four strides'):
        TimmRepBackbone(model_name='vit_tiny_patch16_224')
    _register('rb_test_no_feature_info', _NoFeatureInfo)
    with pytest.raises(ValueError, match='has no feature_info'):
        TimmRepBackbone(model_name='rb_test_no_feature_info')
    _register('rb_test_bn_registered_first', _BnRegisteredFirst)
    with pytest.raises(ValueError, match='bn1 does not take the output of the input.*not a plain chain'):
        TimmRepBackbone(model_name='rb_test_bn_registered_first')
    with pytest.raises(ValueError, match='out_indices'):
        TimmRepBackbone(model_name='mobileone_s0', out_indices=(4,))


def test_pair_that_is_not_data_flow_is_refused(monkeypatch):
    """The probe checks each known pair against the forward: a table entry pairing a conv with a BN
    that reads something else (InvertedResidual's conv_pw with bn2, which follows conv_dw) is refused."""
    from timm.models import _efficientnet_blocks as eb

    from rep_backbones.models import timm_backbone
    monkeypatch.setattr(timm_backbone, 'known_block_pairs', lambda: {eb.InvertedResidual: (('conv_pw', 'bn2'),)})
    with pytest.raises(ValueError, match=r"blocks\.1\.0\.bn2 does not read exactly its conv's output"):
        TimmRepBackbone(model_name='mobilenetv2_100')


def test_unfoldable_batchnorm_is_named():
    """MobileNetV4-hybrid's MobileAttention normalizes before attention and the BN output feeds several
    convs (query, and zero-padded strided depthwise key/value downsamplers): no exact fold known here,
    so fusion stops and names the layer instead of leaving it or folding it wrongly."""
    model = TimmRepBackbone(model_name='mobilenetv4_hybrid_medium').eval()
    with pytest.raises(NotImplementedError, match=r'no exact fold is known here: blocks\.2\.4\.norm'):
        model.switch_to_deploy()


def test_arch_alias_and_tool_spec():
    from rep_backbones.io.build import build_from_spec
    assert build_from_spec('TimmRepBackbone:repvgg_a0').model_name == 'repvgg_a0'
    assert build_backbone('TimmRepBackbone', arch='repvgg_a0').out_channels == \
        build_backbone('TimmRepBackbone', model_name='repvgg_a0').out_channels


# -- training behaviour --------------------------------------------------------------------------------
def test_frozen_stages_and_norm_eval():
    model = TimmRepBackbone(model_name='mobilenetv3_large_100', frozen_stages=1).train()
    stages = model.feature_stages()
    frozen = {id(p) for mods in stages[:2] for m in mods for p in m.parameters()}
    assert frozen
    for p in model.parameters():
        assert p.requires_grad == (id(p) not in frozen)
    assert not any(sub.training for mods in stages[:2] for module in mods for sub in module.modules())
    assert all(sub.training for sub in stages[2][0].modules())
    assert stages[0] == [model.conv_stem, model.bn1, model.blocks[0]]     # up to timm's first stride-4 feature

    model = TimmRepBackbone(model_name='repvit_m0_9', norm_eval=True).train()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms)
    before = [m.running_mean.clone() for m in norms]
    model(_input(size=(64, 64), batch=2))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, norms))


def test_every_parameter_gets_a_gradient():
    model = TimmRepBackbone(model_name='ghostnetv2_100').train()
    sum(o.mean() for o in model(_input(size=(64, 64), batch=2))).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]


# -- checkpoints -----------------------------------------------------------------------------------
def test_timm_checkpoint_file_through_init_cfg(tmp_path):
    """A timm release-style file (safetensors, timm keys, classifier included) loads strictly; the
    head is reported as ignored; a training-form file into deploy=True is refused."""
    import safetensors.torch
    ref = randomize_bn(timm.create_model('repvit_m0_9')).eval()
    path = tmp_path / 'model.safetensors'
    safetensors.torch.save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = TimmRepBackbone(model_name='repvit_m0_9', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    report = model.init_report
    assert report.ignored and all(k.startswith('head.') for k in report.ignored)
    assert not report.missing and not report.unexpected
    x = _input()
    with torch.no_grad():
        assert torch.equal(model.eval()(x)[3], ref.forward_features(x))
    with pytest.raises(CheckpointError, match='train-form checkpoint but the model is in deploy form'):
        TimmRepBackbone(model_name='repvit_m0_9', deploy=True).load_pretrained(str(path))


def test_syncbn_keeps_timm_activations():
    """timm's converter keeps BatchNormAct2d's activation; mmengine's revert (what the tools do on
    CPU) would drop it, and train()/eval() put timm's norm+act layer back."""
    from mmengine.model import revert_sync_batchnorm
    from timm.layers import BatchNormAct2d, SyncBatchNormAct
    model = randomize_bn(TimmRepBackbone(model_name='efficientnet_b0', norm_cfg=dict(type='SyncBN'))).eval()
    assert any(isinstance(m, SyncBatchNormAct) for m in model.modules())
    reference = TimmRepBackbone(model_name='efficientnet_b0').eval()
    reference.load_state_dict(model.state_dict())
    reverted = revert_sync_batchnorm(model)
    assert not any(isinstance(m, (BatchNormAct2d, nn.SyncBatchNorm)) for m in reverted.modules())
    reverted.eval()
    assert sum(isinstance(m, BatchNormAct2d) for m in reverted.modules()) == count_norms(reverted)
    x = _input()
    with torch.no_grad():
        for a, b in zip(reverted(x), reference(x)):
            assert torch.equal(a, b)


# -- mm: comparator configs and the toy RetinaNet ---------------------------------------------------------
COMPARATOR_CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', 'timm_comparators', '*.py')))


@pytest.mark.slow           # whole mm models, as tests/test_configs.py
@pytest.mark.parametrize('path', COMPARATOR_CONFIGS, ids=os.path.basename)
def test_comparator_config_builds_and_runs(path):
    from rep_backbones.io.build import build_model_from_config
    model = build_model_from_config(path)
    backbone = model.backbone
    assert isinstance(backbone, TimmRepBackbone)
    # SyncBN (reverted to BN on CPU by build_model_from_config) kept timm's norm+act activations
    assert not any(_dropped_activation(m) for m in backbone.modules())
    assert list(model.neck.in_channels) == backbone.out_channels
    assert_test_step_runs(model)


def _flatten(outputs):
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for item in outputs for t in _flatten(item)]


def test_trains_and_fuses_inside_toy_retinanet():
    from mmdet.testing import demo_mm_inputs
    from mmengine.optim import OptimWrapper

    from rep_backbones.io.build import build_model_from_config

    from .helpers import calibrate_bn

    def batch():
        return demo_mm_inputs(2, [[3, 97, 131]] * 2, num_items=[3, 2], num_classes=4, use_box_type=True)

    torch.manual_seed(0)
    model = build_model_from_config(os.path.join(ROOT, 'configs/toy/toy_retinanet_repghost_1_0x.py'),
                                    backbone=dict(type='TimmRepBackbone', model_name='mobileone_s1'))
    assert list(model.neck.in_channels) == model.backbone.out_channels
    model.train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3))
    data = model.data_preprocessor(batch(), True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    loss.backward()
    assert not [n for n, p in model.backbone.named_parameters() if p.requires_grad and p.grad is None]
    optim.step()

    inputs = model.data_preprocessor(batch(), False)['inputs']
    calibrate_bn(model.backbone, inputs)
    model.eval()
    with torch.no_grad():
        ref = model(inputs, mode='tensor')
        fused = rep_backbones.fuse(copy.deepcopy(model))
        out = fused(inputs, mode='tensor')
        assert len(fused.test_step(batch())) == 2
    assert fused.backbone.deploy and count_norms(fused.backbone) == 0
    for a, b in zip(_flatten(ref), _flatten(out)):
        assert (a - b).abs().max() <= FUSE_RTOL * a.abs().max()
