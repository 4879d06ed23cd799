"""RepGhostNetV2 / MobileNetV4 (conv S/M/L): structure vs the official key layouts, complexity vs the
paper figures, exact fusion, feature taps, freezing, and checkpoint loading (timm and official layouts)."""
from __future__ import annotations

import copy
import functools
import re

import pytest
import timm
import torch
from timm.layers import DropPath
from torch import nn

import rep_backbones
from rep_backbones import CheckpointError, build_backbone, build_classifier
from rep_backbones.complexity import count_macs, count_params
from rep_backbones.models.mobilenetv4 import ARCHS as SPECS
from rep_backbones.models.mobilenetv4 import UIB, MobileNetV4, MobileNetV4Classifier, convert_official_state_dict
from rep_backbones.models.repghostnetv2 import RepGhostNetV2, RepGhostNetV2Classifier, repghost_shortcuts
from tests.helpers import (
    ODD_SIZE,
    assert_fuses_exactly,
    assert_rel_close,
    count_norms,
    keys_file,
    randomize_bn,
    synthetic_state_dict,
)

ARCHS = {'S': 'small', 'M': 'medium', 'L': 'large'}
NETS = {'RepGhostNetV2': (RepGhostNetV2, RepGhostNetV2Classifier, 'repghostnetv2'),
        'MobileNetV4': (MobileNetV4, MobileNetV4Classifier, 'mobilenetv4')}
# Paper figures (official RepGhostNetV2 readme / ARCHITECTURES.md §2.3): parameters, and FLOPs at the
# ImageNet resolution = conv+linear MACs + the 1,280 head-conv bias adds.
PAPER = {'S': (3_772_744, 186_006_848, 224), 'M': (9_714_232, 1_080_245_504, 256),
        'L': (32_589_584, 6_376_221_952, 384)}
CHANNELS = {'S': [32, 64, 96, 128, 960], 'M': [48, 80, 160, 256, 960], 'L': [48, 96, 192, 512, 960]}
# Fusion checks run at the detection-style odd size (L too: affordable with one thread, see below).
ALL = (0, 1, 2, 3, 4)
pytestmark = pytest.mark.usefixtures('one_thread')


@functools.lru_cache(maxsize=None)
def _built(cls, arch, **kwargs):
    torch.manual_seed(0)
    return cls(arch, **kwargs)


def build(cls, arch='S', **kwargs):
    """Fresh copy of a cached model (construction of L costs more than a deep copy): tests change their
    models (BN statistics, fusion, loading), the cached one is never handed out."""
    return copy.deepcopy(_built(cls, arch, **kwargs))


def official_state_dict(kind: str, arch: str) -> dict:
    """A synthetic checkpoint in the official repository's layout, from the reference keys file."""
    return synthetic_state_dict(keys_file(f'{kind}_{ARCHS[arch]}.keys.txt'), seed=1)


# -- structure and complexity ----------------------------------------------------------------------
@pytest.mark.parametrize('arch', list(ARCHS))
@pytest.mark.parametrize('net', list(NETS))
def test_official_layout_converts_and_loads(net, arch):
    backbone_cls, classifier_cls, kind = NETS[net]
    official = official_state_dict(kind, arch)
    model = build(classifier_cls, arch)
    # every official tensor has a place of the same shape, and nothing is left over
    converted = convert_official_state_dict(official, arch, net)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert own == {k: tuple(v.shape) for k, v in converted.items()}
    report = model.load_backbone_state_dict(official, strict=True)
    assert not (report.missing or report.unexpected or report.mismatched)
    assert torch.equal(model.conv_head.bias, official['conv_head.bias'])
    # the backbone form ignores the head keys (reported, not loaded)
    backbone = build(backbone_cls, arch, out_indices=(0, 1, 2, 3, 4))
    report = backbone.load_backbone_state_dict(official)
    assert sorted(report.ignored) == ['classifier.bias', 'classifier.weight', 'conv_head.bias', 'conv_head.weight']
    first_s32, last = {'S': (11, 17), 'M': (13, 24), 'L': (16, 29)}[arch]   # official layer indices
    assert torch.equal(backbone.blocks[3][0].pw_exp.conv.weight,
                       official[f'layers.{first_s32}.expand_conv.conv.weight'])
    assert torch.equal(backbone.blocks[4][0].bn1.running_mean, official[f'layers.{last}.bn1.running_mean'])
    _assert_every_tensor_in_place(model.state_dict(), official)


def _assert_every_tensor_in_place(loaded: dict, official: dict):
    """Every tensor of the official file is in ``loaded`` exactly once, bit-equal, under a name with the
    same parameter kind (weight, bias, running_mean, ...), and the official layers arrive in the model's
    order (``layers.i`` before ``layers.j`` for i < j). The random values of the file are distinct, so
    a value identifies the official tensor it came from."""
    def skip(key):
        return key.endswith('num_batches_tracked')
    by_value = {}
    for key, value in official.items():
        if not skip(key):
            by_value.setdefault((tuple(value.shape), value.numpy().tobytes()), []).append(key)
    assert all(len(keys) == 1 for keys in by_value.values()), 'the synthetic file repeats a value'
    origin = {}
    for key, value in loaded.items():
        if skip(key):
            continue
        found = by_value.get((tuple(value.shape), value.numpy().tobytes()))
        assert found, f'{key}: its value is no tensor of the official file'
        origin[key] = found[0]
    assert sorted(origin.values()) == sorted(k for k in official if not skip(k)), 'official tensors lost or doubled'
    for key, source in origin.items():
        assert key.rsplit('.', 1)[1] == source.rsplit('.', 1)[1], (key, source)
    layers = [int(m.group(1)) for key in origin.values() if (m := re.match(r'layers\.(\d+)\.', key))]
    assert layers == sorted(layers), 'official layers out of order'


@pytest.mark.parametrize('arch', list(ARCHS))
def test_params_equal_seed(arch):
    for net in NETS:
        model = build(NETS[net][1], arch)
        assert count_params(model) == PAPER[arch][0], net


@pytest.mark.parametrize('arch', list(ARCHS))
def test_macs_equal_seed(arch):
    params, flops, size = PAPER[arch]
    macs = count_macs(build(RepGhostNetV2Classifier, arch), size)
    assert macs + 1280 == flops            # the paper also counts the 1,280 head-conv bias adds
    assert round(flops / 1e6, 1) == {'S': 186.0, 'M': 1080.2, 'L': 6376.2}[arch]
    if arch == 'S':  # the moved depthwise convs cost the same MACs in MobileNetV4
        assert count_macs(build(MobileNetV4Classifier, arch), size) == macs


def test_repghost_shortcut_rule():
    """Start DWs move to the end of the preceding UIB (also across stages), never from a first UIB
    after a plain conv; kernels are conserved."""
    for arch, spec in SPECS.items():
        mnv4, rgv2 = spec.stages, repghost_shortcuts(spec.stages)
        flat_m = [b for stage in mnv4 for b in stage if isinstance(b, UIB)]
        flat_r = [b for stage in rgv2 for b in stage if isinstance(b, UIB)]
        assert flat_r[0].start == flat_m[0].start > 0
        assert all(b.start == 0 for b in flat_r[1:])
        assert [b.end for b in flat_r[:-1]] == [b.start for b in flat_m[1:]]
        assert [len(s) for s in mnv4] == [len(s) for s in rgv2]
    s = repghost_shortcuts(SPECS['S'].stages)
    assert s[2][-1] == UIB(0, 0, 3, 1, 96, 4)      # official layers.10: end DW from MNv4's layers.11


# -- features, variants, freezing ----------------------------------------------------------------
@pytest.mark.parametrize('arch', list(ARCHS))
def test_out_indices_and_channels(arch):
    model = build(RepGhostNetV2, arch, out_indices=ALL)
    assert model.out_channels == CHANNELS[arch] and model.out_strides == [4, 8, 16, 32, 32]
    with torch.no_grad():
        outs = model.eval()(torch.randn(1, 3, 67, 99))
    assert [o.shape[1] for o in outs] == CHANNELS[arch]
    assert [tuple(o.shape[2:]) for o in outs] == [(17, 25), (9, 13), (5, 7), (3, 4), (3, 4)]
    if arch == 'S':
        assert build(MobileNetV4, arch).out_channels == CHANNELS[arch][:4]
        assert build(MobileNetV4, arch).out_strides == [4, 8, 16, 32]
        assert build(MobileNetV4, arch, out_indices=(-1,)).out_indices == (4,)


def test_arch_names_and_errors():
    for spelling, canonical in [('s', 'S'), ('SMALL', 'S'), ('medium', 'M'), ('L', 'L'), (' Large ', 'L')]:
        assert RepGhostNetV2.resolve_arch(spelling) == canonical
    assert build_backbone('MobileNetV4', arch='small').arch == 'S'
    assert isinstance(build_classifier('RepGhostNetV2', arch='S'), RepGhostNetV2Classifier)
    with pytest.raises(ValueError, match=r"unknown arch 'XL'.*'S', 'M', 'L'"):
        RepGhostNetV2('XL')
    with pytest.raises(ValueError, match='out of range'):
        MobileNetV4('S', out_indices=(5,))


def test_frozen_stages_and_norm_eval():
    model = build(RepGhostNetV2, 'S', frozen_stages=2, norm_eval=False)
    model.train()
    frozen = [model.conv_stem, model.bn1, model.blocks[0], model.blocks[1]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(not m.training for f in frozen for m in f.modules())
    assert all(p.requires_grad for p in model.blocks[2:].parameters())
    assert model.blocks[2].training

    for norm_cfg in (None, dict(type='SyncBN')):
        model = MobileNetV4('S', norm_eval=True, norm_cfg=norm_cfg, reparam_bn=True)
        model.train()
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert norms and all(not m.training for m in norms)
        if norm_cfg:
            assert all(isinstance(m, nn.SyncBatchNorm) for m in norms)
            # activations are separate modules: SyncBN conversion keeps every ReLU
            assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == \
                sum(isinstance(m, nn.ReLU) for m in build(MobileNetV4, 'S').modules())
        assert any(m.training for m in model.modules() if isinstance(m, nn.ReLU))


def test_stem_1x1_act_convention():
    assert isinstance(build(MobileNetV4, 'S').blocks[0][1].act, nn.ReLU)          # timm / its weights
    assert isinstance(build(RepGhostNetV2, 'S').blocks[0][1].act, nn.Identity)    # official repository
    assert isinstance(MobileNetV4('S', stem_1x1_act=False).blocks[1][1].act, nn.Identity)



def test_official_mobilenetv4_s_file_builds_the_matching_structure():
    """The RepGhostNetV2 repository's MobileNetV4-S has no activation after the two 1x1 stem-stage
    convs; timm's (the default here) has ReLU. Its weights in the ReLU structure computed something
    else (relative error 0.89) without a word: now the layout of the file picks the structure."""
    official = official_state_dict('mobilenetv4', 'S')
    reference = MobileNetV4('S', stem_1x1_act=False).eval()           # that repository's structure
    reference.load_backbone_state_dict(official)
    model = MobileNetV4('S').eval()                                    # default: timm's convention
    model.load_backbone_state_dict(official)
    assert model.stem_1x1_act is False and isinstance(model.blocks[0][1].act, nn.Identity)
    x = torch.randn(1, 3, 67, 75)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x), reference(x)))
    with pytest.raises(CheckpointError, match='stem_1x1_act=False'):
        MobileNetV4('S', stem_1x1_act=True).load_backbone_state_dict(official)
    # the same through init_cfg, and timm-layout files keep timm's structure
    timm_layout = MobileNetV4('S').state_dict()
    kept = MobileNetV4('S')
    kept.load_backbone_state_dict(timm_layout)
    assert kept.stem_1x1_act is True and isinstance(kept.blocks[0][1].act, nn.ReLU)


def test_bn_branch_checkpoint_needs_reparam_bn():
    with_branches = MobileNetV4('S', reparam_bn=True).state_dict()
    with pytest.raises(CheckpointError, match='reparam_bn=True'):
        MobileNetV4('S').load_backbone_state_dict(with_branches)
    MobileNetV4('S', reparam_bn=True).load_backbone_state_dict(with_branches)


# -- fusion ------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', list(ARCHS))
@pytest.mark.parametrize('net', list(NETS))
def test_fuses_exactly(net, arch):
    model = build(NETS[net][0], arch, out_indices=ALL)
    fused = assert_fuses_exactly(model, torch.randn(1, 3, *ODD_SIZE), float64=False)   # float64: the contract test
    assert count_norms(fused) == 0 and fused.deploy
    assert type(model).state_dict_form(fused.state_dict()) == 'deploy'


@pytest.mark.parametrize('net,arch,size', [('RepGhostNetV2', 'S', ODD_SIZE), ('MobileNetV4', 'M', ODD_SIZE),
                                           ('RepGhostNetV2', 'L', (67, 99))])
def test_fuses_exactly_with_bn_branches(net, arch, size):
    model = build(NETS[net][0], arch, out_indices=ALL, reparam_bn=True)
    n_branches = sum(1 for k in model.state_dict() if k.endswith('.rep_bn.running_var'))
    n_dw = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and m.stride == (1, 1))
    assert n_branches == n_dw > 0
    fused = assert_fuses_exactly(model, torch.randn(1, 3, *size), float64=arch != 'L')   # float64: S and M
    assert count_norms(fused) == 0 and not any('rep_bn' in k for k in fused.state_dict())
    plain = rep_backbones.fuse(build(NETS[net][0], arch, out_indices=ALL))
    assert {k: v.shape for k, v in plain.state_dict().items()} == \
        {k: v.shape for k, v in fused.state_dict().items()}


def test_classifier_fuses_and_deploy_roundtrip():
    model = build(RepGhostNetV2Classifier, 'S', reparam_bn=True)
    x = torch.randn(1, 3, 65, 97)
    fused = assert_fuses_exactly(model, x)
    assert count_norms(fused) == 0
    deployed = RepGhostNetV2Classifier('S', deploy=True)
    assert deployed.deploy and count_norms(deployed) == 0
    deployed.load_backbone_state_dict(fused.state_dict())
    with torch.no_grad():
        assert_rel_close(model(x), deployed.eval()(x))


# -- checkpoints --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def timm_small():
    t = timm.create_model('mobilenetv4_conv_small', pretrained=False)
    randomize_bn(t, seed=3)
    return t.eval()


def test_loads_timm_checkpoint_exactly():
    t = timm_small()
    x = torch.randn(1, 3, 65, 97)
    backbone = build(MobileNetV4, 'S', out_indices=ALL)
    report = backbone.load_backbone_state_dict(t.state_dict())     # a "timm checkpoint"
    assert set(report.ignored) == {'conv_head.weight', 'norm_head.weight', 'norm_head.bias', 'norm_head.running_mean',
                                   'norm_head.running_var', 'norm_head.num_batches_tracked', 'classifier.weight',
                                   'classifier.bias'}
    with torch.no_grad():
        ours = backbone.eval()(x)
        ref = t.forward_features(x)
        torch.testing.assert_close(ours[4], ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
        # timm's head (bias-free conv + BN) folds into the official biased conv: logits agree
        classifier = build(MobileNetV4Classifier, 'S')
        classifier.load_backbone_state_dict(t.state_dict())
        logits, ref = classifier.eval()(x), t(x)
        torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
        # a model with BN-only branches loads it with zero branches: same function, then fuses exactly
        rep = build(MobileNetV4, 'S', out_indices=(4,), reparam_bn=True)
        rep.load_backbone_state_dict(t.state_dict())
        torch.testing.assert_close(rep.eval()(x)[0], ref_features := t.forward_features(x),
                                   rtol=1e-4, atol=1e-4 * ref_features.abs().max().item())


def test_wrong_checkpoints_raise():
    timm_sd = timm_small().state_dict()
    with pytest.raises(CheckpointError, match='does not fit RepGhostNetV2'):
        build(RepGhostNetV2, 'S').load_backbone_state_dict(timm_sd)       # MNv4 weights, RGv2 model
    with pytest.raises(CheckpointError, match='does not fit MobileNetV4'):
        build(MobileNetV4, 'S').load_backbone_state_dict(official_state_dict('repghostnetv2', 'S'))
    with pytest.raises(CheckpointError, match='does not fit'):
        build(MobileNetV4, 'M').load_backbone_state_dict(timm_sd)         # wrong variant
    with pytest.raises(CheckpointError, match='train-form checkpoint but the model is in deploy form'):
        MobileNetV4('S', deploy=True).load_backbone_state_dict(timm_sd)
    fused = rep_backbones.fuse(build(RepGhostNetV2, 'S'))
    with pytest.raises(CheckpointError, match='deploy-form checkpoint but the model is in train form'):
        build(RepGhostNetV2, 'S').load_backbone_state_dict(fused.state_dict())
    with pytest.raises(CheckpointError, match='not a RepGhostNetV2 state dict'):
        build(RepGhostNetV2, 'S').load_backbone_state_dict({'blocks.0.0.ghost1.primary_conv.0.weight':
                                                            torch.zeros(1)})


def test_init_cfg_pretrained_official_file(tmp_path):
    official = official_state_dict('repghostnetv2', 'S')
    path = tmp_path / 'rgv2_s.pth'
    torch.save({'state_dict_ema': {f'module.{k}': v for k, v in official.items()}, 'epoch': 3}, path)
    model = RepGhostNetV2('S', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    report = model.init_report
    # head keys (4) and, as the default out_indices do not use it, the final 960-ch conv (blocks.4: 6)
    assert report.wrapper_key == 'state_dict_ema' and len(report.ignored) == 4 + 6
    assert sum(k.startswith('blocks.4.') for k in report.ignored) == 6 and not hasattr(model.blocks, '4')
    assert torch.equal(model.blocks[2][5].dw_end.conv.weight, official['layers.10.end_dw.conv.weight'])
    assert torch.equal(model.bn1.running_var, official['layers.0.bn1.running_var'])


def test_drop_path_only_on_residual_blocks():
    model = build(RepGhostNetV2, 'S', drop_path_rate=0.2)
    rates = [m.drop_path.drop_prob for m in model.modules() if isinstance(getattr(m, 'drop_path', None), DropPath)]
    residual = [m for m in model.modules() if getattr(m, 'has_skip', False)]
    assert len(rates) == len(residual) > 0 and rates == sorted(rates) and 0 < rates[-1] < 0.2
    assert_fuses_exactly(model, torch.randn(1, 3, 65, 97))
