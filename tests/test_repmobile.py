"""RepMobile: exact fusion (borders included), structure, freezing, checkpoints, seed counts."""
import copy

import pytest
import torch
from torch import nn

import rep_backbones
from rep_backbones.checkpoint import CheckpointError
from rep_backbones.complexity import count_macs, count_params
from rep_backbones.models import RepMobile, RepMobileClassifier, build_backbone, build_classifier
from rep_backbones.models.repmobile import RepMobileBlock
from rep_backbones.reparam import BorderCorrectedConv2d

from .helpers import (
    ODD_SIZE,
    assert_fuses_exactly,
    assert_rel_close,
    count_norms,
    damp_deep_plain_backbone,
    keys_file,
    randomize_bn,
    synthetic_state_dict,
)

ARCHS = ('S', 'M', 'L')
# ARCHITECTURES.md §0: FPN in_channels at strides 4/8/16/32.
CHANNELS = {'S': [64, 128, 256, 512], 'M': [80, 160, 320, 640], 'L': [96, 192, 384, 768]}
# ARCHITECTURES.md §4.1 [measured] on the official code: classifier params without / with the
# distillation head, backbone (stem + layer0-3) params, MACs at 224; readme: 5.7M/0.4G, 8.2M/0.7G, 18.4M/1.4G.
PAPER = {'S': (5_719_944, 7_795_568, 3_117_984, 0.417, (5.7, 0.4)),
        'M': (8_205_552, 10_281_176, 5_472_520, 0.695, (8.2, 0.7)),
        'L': (18_361_624, 20_437_248, 15_497_520, 1.374, (18.4, 1.4))}
TINY_ODD = (33, 47)


# -- fusion --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', ARCHS)
def test_fused_equals_training_form(arch):
    """Fused vs training form at 251x331 and at 33x47 (where every feature pixel is near a border)."""
    torch.manual_seed(0)
    model = damp_deep_plain_backbone(RepMobile(arch))      # L only: see the helper
    x = torch.randn(1, 3, *ODD_SIZE)
    # randomizes BN stats in place, returns the fused copy; float64: test_large_fuses_exactly_in_float64 and
    # test_backbone_contract.py
    fused = assert_fuses_exactly(model, x, float64=False)
    assert fused.deploy and not model.deploy and count_norms(fused) == 0
    assert not any(isinstance(m, nn.AvgPool2d) for m in fused.modules())
    assert fused.out_channels == CHANNELS[arch] and fused.out_strides == [4, 8, 16, 32]
    tiny = torch.randn(1, 3, *TINY_ODD)
    with torch.no_grad():
        outs = [(model(inp), fused(inp)) for inp in (x, tiny)]
    for size, (ref, out) in zip((ODD_SIZE, TINY_ODD), outs):
        assert [o.shape[1:] for o in out] == [(c, -(-size[0] // s), -(-size[1] // s))
                                              for c, s in zip(CHANNELS[arch], (4, 8, 16, 32))]
        assert_rel_close(ref, out)


def test_large_fuses_exactly_in_float64():
    """Undamped L, default init + random BN stats: the algebra is exact to float64 rounding."""
    model = RepMobile('L').double()
    assert_fuses_exactly(model, torch.randn(1, 3, *TINY_ODD, dtype=torch.float64), rtol=1e-9)


def _block_pair(in_chs, out_chs, stride, seed=0):
    torch.manual_seed(seed)
    block = randomize_bn(RepMobileBlock(in_chs, out_chs, stride), seed).eval()
    with torch.no_grad():   # non-zero conv biases too
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                m.bias.uniform_(-0.5, 0.5)
    fused = copy.deepcopy(block)
    fused.switch_to_deploy()
    return block, fused


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('size', [(13, 11), (12, 10), (1, 1), (2, 3), (3, 2)])
def test_block_fusion_exact_at_borders(stride, size):
    block, fused = _block_pair(8, 8 * stride, stride)
    assert count_norms(fused) == 0 and isinstance(fused.conv_dw[1], BorderCorrectedConv2d)
    x = torch.randn(2, 8, *size) * 2
    with torch.no_grad():
        ref, out = block(x), fused(x)
        err = (out - ref).abs()
        tol = 1e-5 * ref.abs().max()
        # every border pixel explicitly, then everything
        for strip in (err[..., 0, :], err[..., -1, :], err[..., :, 0], err[..., :, -1]):
            assert strip.max() <= tol
        assert err.max() <= tol
        # the border correction is what makes the borders right: without it only the interior matches
        dw = fused.conv_dw[1]
        naive = nn.functional.conv2d(_act(fused, x), dw.weight, dw.bias, dw.stride, dw.padding, groups=dw.groups)
        assert not torch.allclose(naive, ref, atol=1e-3)
        if min(ref.shape[-2:]) > 2:
            assert torch.allclose(naive[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-4)


def _act(block, x):
    y = block.conv_pw(x)
    return y * torch.sigmoid(y + block.ClaSiLU_gate(x))


def test_whole_model_borders_on_tiny_odd_input():
    """Every pixel of every feature map sits within 2 pixels of a border at 33x47."""
    model = randomize_bn(RepMobile('S')).eval()
    fused = rep_backbones.fuse(copy.deepcopy(model))
    x = torch.randn(2, 3, *TINY_ODD)
    with torch.no_grad():
        for ref, out in zip(model(x), fused(x)):
            tol = 1e-4 * ref.abs().max()
            for strip in (slice(0, 1), slice(-1, None)):
                assert (out[..., strip, :] - ref[..., strip, :]).abs().max() <= tol
                assert (out[..., :, strip] - ref[..., :, strip]).abs().max() <= tol


def test_fuse_twice_is_noop_and_deploy_ctor_matches_structure():
    model = randomize_bn(RepMobile('S')).eval()
    rep_backbones.fuse(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rep_backbones.fuse(model)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    built = RepMobile('S', deploy=True)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in after.items()}
    assert count_norms(built) == 0
    assert {'stem.0.bias', 'layer0.0.conv_pw.1.weight', 'layer0.0.ClaSiLU_gate.2.bias',
            'layer3.2.conv_dw.1.border_taps'} <= set(after)


def test_training_and_deploy_forms_backpropagate():
    for model in (RepMobile('S').train(), RepMobile('S', deploy=True).train()):
        out = model(torch.randn(2, 3, 35, 41))
        sum(o.mean() for o in out).backward()
        assert model.stem[0].weight.grad is not None


# -- structure / options ---------------------------------------------------------------------------
def test_default_and_custom_out_indices():
    model = RepMobile('S').eval()
    assert model.out_indices == (0, 1, 2, 3)
    assert model.out_channels == CHANNELS['S'] and model.out_strides == [4, 8, 16, 32]
    sub = RepMobile('S', out_indices=(1, -1)).eval()
    assert sub.out_indices == (1, 3) and sub.out_channels == [128, 512]
    with torch.no_grad():
        outs = sub(torch.randn(1, 3, 64, 96))
    assert [o.shape[1:] for o in outs] == [(128, 8, 12), (512, 2, 3)]


def test_arch_names_and_errors():
    assert [RepMobile.resolve_arch(a) for a in ('s', 'Small', 'repmobile_M', 'MEDIUM', 'large', 'RepMobile_L')] == \
        ['S', 'S', 'M', 'M', 'L', 'L']
    assert RepMobile(' small ').arch == 'S'
    assert type(build_backbone('RepMobile', arch='S')) is RepMobile
    assert type(build_classifier('RepMobile', arch='S')) is RepMobileClassifier
    with pytest.raises(ValueError, match=r"unknown arch 'XL'.*'S', 'M', 'L'"):
        RepMobile('XL')
    with pytest.raises(ValueError, match='out_indices .*out of range.*0..3'):
        RepMobile('S', out_indices=(0, 4))
    with pytest.raises(ValueError, match='frozen_stages'):
        RepMobile('S', frozen_stages=5)


@pytest.mark.parametrize('deploy', [False, True])
def test_frozen_stages(deploy):
    model = RepMobile('S', frozen_stages=2, deploy=deploy)
    model.train()
    for module in (model.stem, model.layer0, model.layer1):
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules())
    assert all(p.requires_grad for p in model.layer2.parameters()) and model.layer2.training
    if not deploy:   # fusion keeps the frozen part frozen
        model.switch_to_deploy()
        assert not model.layer1[0].conv_pw[1].weight.requires_grad and model.layer2.training
        assert model.layer2[0].conv_pw[1].weight.requires_grad


@pytest.mark.parametrize('norm_cfg', [None, dict(type='SyncBN')])
def test_norm_eval_freezes_running_stats(norm_cfg):
    model = RepMobile('S', norm_eval=True, norm_cfg=norm_cfg)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 1 + 3 * 24
    assert norm_cfg is None or all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    model.train()
    before = [m.running_mean.clone() for m in norms]
    model(torch.randn(2, 3, 64, 64))
    assert all(not m.training for m in norms)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))
    plain = RepMobile('S').train()
    plain(torch.randn(2, 3, 64, 64))
    assert not torch.equal(plain.layer0[0].conv_pw[0].running_mean, torch.zeros(32))


def test_syncbn_model_fuses_exactly():
    model = RepMobile('S', norm_cfg=dict(type='SyncBN', eps=1e-3))
    assert model.layer0[0].conv_dw[0].eps == 1e-3
    assert count_norms(assert_fuses_exactly(model, torch.randn(1, 3, 67, 75))) == 0


# -- checkpoints -----------------------------------------------------------------------------------
def _official(arch, seed=0):
    return synthetic_state_dict(keys_file(f'repmobile_{arch}.keys.txt'), seed)


@pytest.mark.parametrize('arch', ['S', 'L'])
def test_official_checkpoint_loads_with_head_keys_ignored(tmp_path, arch):
    official = _official(arch)
    path = tmp_path / f'RepMobile_{arch}.pth'
    torch.save({'model': official, 'epoch': 299, 'args': __import__('argparse').Namespace(lr=1e-3)}, path)
    model = RepMobile(arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    report = model.init_report
    assert report.wrapper_key == 'model'
    assert not report.missing and not report.unexpected and not report.mismatched
    assert sorted(report.ignored) == sorted(k for k in official if k.startswith(('head.', 'classifier.')))
    own = model.state_dict()
    assert all(torch.equal(own[k], official[k]) for k in own)
    # the classifier form takes every key of the file
    clf = RepMobileClassifier(arch)
    clf.load_pretrained(str(path))
    assert all(torch.equal(v, official[k]) for k, v in clf.state_dict().items())


def test_distilled_checkpoint_and_prefixed_detector_checkpoint(tmp_path):
    source = randomize_bn(RepMobileClassifier('S', distillation=True))
    report = RepMobile('S').load_backbone_state_dict(source.state_dict())
    assert any(k.startswith('classifier.classifier_dist.') for k in report.ignored) and not report.missing
    path = tmp_path / 'det.pth'
    backbone = {k: v for k, v in source.state_dict().items() if not k.startswith(('head', 'classifier'))}
    torch.save({'meta': {}, 'state_dict': {**{f'backbone.{k}': v for k, v in backbone.items()},
                                           'neck.conv.weight': torch.zeros(1)}}, path)
    model = RepMobile('S', init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    assert all(torch.equal(v, backbone[k]) for k, v in model.state_dict().items())


def test_fused_state_dict_loads_into_deploy_model(tmp_path):
    model = RepMobile('M')
    model.load_backbone_state_dict(_official('M'))
    model.eval()
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        ref = model(x)
    model.switch_to_deploy()
    path = tmp_path / 'fused.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    deploy = RepMobile('M', deploy=True).eval()
    report = deploy.load_pretrained(str(path))
    assert not report.missing and not report.ignored
    with torch.no_grad():
        assert_rel_close(ref, deploy(x))


def test_wrong_form_and_foreign_state_dicts():
    with pytest.raises(CheckpointError, match='train-form checkpoint but the model is in deploy form'):
        RepMobile('S', deploy=True).load_backbone_state_dict(_official('S'))
    with pytest.raises(CheckpointError, match='deploy-form checkpoint but the model is in train form'):
        RepMobile('S').load_backbone_state_dict(RepMobile('S', deploy=True).state_dict())
    with pytest.raises(CheckpointError, match='not a RepMobile state dict'):
        RepMobile('S').load_backbone_state_dict({'foo.weight': torch.zeros(1)})
    with pytest.raises(CheckpointError, match='mismatched'):
        RepMobile('M').load_backbone_state_dict(_official('S'))


# -- classifier and paper table ---------------------------------------------------------------------
@pytest.mark.parametrize('arch', ARCHS)
def test_classifier_reproduces_seed_params_and_macs(arch):
    params, params_dist, params_backbone, gmacs, (readme_m, readme_g) = PAPER[arch]
    clf = RepMobileClassifier(arch)
    assert count_params(clf) == params and round(params / 1e6, 1) == readme_m
    assert count_params(RepMobileClassifier(arch, distillation=True)) == params_dist
    assert count_params(RepMobile(arch)) == params_backbone
    macs = count_macs(clf, 224)
    assert round(macs / 1e9, 3) == gmacs and round(macs / 1e9, 1) == readme_g
    clf.switch_to_deploy()   # fusion changes no conv shape: same MACs, fewer parameters
    assert count_macs(clf, 224) == macs and count_params(clf) < params and count_norms(clf) == 0


@pytest.mark.parametrize('distillation', [False, True])
def test_classifier_fuses_exactly(distillation):
    clf = RepMobileClassifier('S', distillation=distillation, num_classes=10)
    fused = assert_fuses_exactly(clf, torch.randn(2, 3, 65, 71))
    assert count_norms(fused) == 0 and fused(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    clf.train()
    out = clf(torch.randn(2, 3, 64, 64))
    assert isinstance(out, tuple) == distillation
