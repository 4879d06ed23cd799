"""RepGhostNet: structure, fusion, freezing, checkpoints, seed counts (pure PyTorch, no mm)."""
import copy

import pytest
import torch
from timm.models.repghost import RepGhostModule
from torch import nn

import rep_backbones
from rep_backbones.checkpoint import CheckpointError, UntrustedCheckpointError
from rep_backbones.complexity import count_macs, count_params
from rep_backbones.models import RepGhostNet, RepGhostNetClassifier
from rep_backbones.models.repghostnet import ARCHS, fuse_ghost_branches

from .helpers import (
    ODD_SIZE,
    assert_fuses_exactly,
    assert_rel_close,
    count_norms,
    keys_file,
    randomize_bn,
    synthetic_state_dict,
)

# ARCHITECTURES.md §0: FPN channels at strides 4/8/16/32 (deepest block per stride) and the final conv.
CHANNELS = {'0.5x': [12, 20, 56, 80, 480], '0.58x': [16, 24, 64, 92, 556], '0.8x': [20, 32, 88, 128, 768],
            '1.0x': [24, 40, 112, 160, 960], '1.11x': [28, 44, 124, 176, 1064], '1.3x': [32, 52, 144, 208, 1248],
            '1.5x': [36, 60, 168, 240, 1440], '2.0x': [48, 80, 224, 320, 1920]}
# Paper table (README of the official repo): params (M) of the converted model, FLOPs (M MACs) at 224.
PAPER = {'0.5x': (2.3, 43), '0.58x': (2.5, 60), '0.8x': (3.3, 96), '1.0x': (4.1, 142), '1.11x': (4.5, 170),
        '1.3x': (5.5, 231), '1.5x': (6.6, 301), '2.0x': (9.8, 516)}
FILE_NAMES = {'0.5x': '0_5x', '0.58x': '0_58x', '0.8x': '0_8x', '1.0x': '1_0x', '1.11x': '1_11x',
              '1.3x': '1_3x', '1.5x': '1_5x', '2.0x': '2_0x'}


@pytest.mark.parametrize('arch', list(ARCHS))
def test_fused_equals_training_form(arch):
    model = RepGhostNet(arch, out_indices=(0, 1, 2, 3, 4))
    x = torch.randn(2, 3, *ODD_SIZE)
    fused = assert_fuses_exactly(model, x, float64=False)     # float64: test_backbone_contract.py, every variant
    assert count_norms(fused) == 0
    assert fused.deploy and not model.deploy
    assert [o.shape[1] for o in fused(x[:1])] == CHANNELS[arch]


def test_fuse_twice_is_noop_and_deploy_ctor_matches_structure():
    model = randomize_bn(RepGhostNet('0.5x')).eval()
    rep_backbones.fuse(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rep_backbones.fuse(model)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    built = RepGhostNet('0.5x', deploy=True)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in after.items()}
    assert count_norms(built) == 0


def test_fuse_whole_model_and_report():
    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = RepGhostNet('0.5x')
            self.neck = nn.Conv2d(80, 8, 1)

    det = Detector()
    report = rep_backbones.fuse_with_report(det)
    assert report.fused == ['backbone'] and report.params_after < report.params_before
    assert rep_backbones.fuse_with_report(det).fused == []
    assert rep_backbones.fuse(det) is det


@pytest.mark.parametrize('arch', list(ARCHS))
def test_default_out_indices_and_channels(arch):
    model = RepGhostNet(arch).eval()
    assert model.out_indices == (0, 1, 2, 3)
    assert model.out_channels == CHANNELS[arch][:4]
    assert model.out_strides == [4, 8, 16, 32]
    outs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape[1:] for o in outs] == [(c, 64 // s, 96 // s) for c, s in zip(CHANNELS[arch], (4, 8, 16, 32))]


def test_arch_names_and_errors():
    assert RepGhostNet('1_3X').arch == '1.3x'
    assert RepGhostNet('repghostnet_0_5x').arch == '0.5x'
    with pytest.raises(ValueError, match=r"unknown arch '3.0x'.*'0.5x'.*'2.0x'"):
        RepGhostNet('3.0x')
    with pytest.raises(ValueError, match='out_indices .*out of range.*0..4'):
        RepGhostNet('0.5x', out_indices=(0, 5))
    with pytest.raises(ValueError, match='frozen_stages'):
        RepGhostNet('0.5x', frozen_stages=7)


def test_frozen_stages():
    model = RepGhostNet('0.5x', frozen_stages=2)
    model.train()
    frozen = [model.conv_stem, model.bn1, *model.blocks[:5]]
    for module in frozen:
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules())
    assert all(p.requires_grad for p in model.blocks[5:].parameters())
    assert model.blocks[5].training
    # fusion keeps the frozen part frozen
    model.switch_to_deploy()
    assert not model.conv_stem.weight.requires_grad and model.blocks[6].training


@pytest.mark.parametrize('norm_cfg', [None, dict(type='SyncBN')])
def test_norm_eval_freezes_running_stats(norm_cfg):
    model = RepGhostNet('0.5x', norm_eval=True, norm_cfg=norm_cfg)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and (norm_cfg is None or all(isinstance(m, nn.SyncBatchNorm) for m in norms))
    model.train()
    before = [m.running_mean.clone() for m in norms]
    model(torch.randn(2, 3, 64, 64))
    assert all(not m.training for m in norms)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))
    plain = RepGhostNet('0.5x').train()
    plain(torch.randn(2, 3, 64, 64))
    assert not torch.equal(plain.bn1.running_mean, torch.zeros_like(plain.bn1.running_mean))


def test_syncbn_model_fuses_exactly():
    model = RepGhostNet('0.5x', norm_cfg=dict(type='SyncBN', eps=1e-3))
    assert model.bn1.eps == 1e-3
    assert_fuses_exactly(model, torch.randn(1, 3, 67, 75))


# -- checkpoints ---------------------------------------------------------------------------------------
def _official_train_dict(arch, seed=0):
    return synthetic_state_dict(keys_file(f'repghostnet_{FILE_NAMES[arch]}.keys.txt'), seed)


@pytest.mark.parametrize('arch', list(ARCHS))
def test_official_training_checkpoint_loads_with_every_key(tmp_path, arch):
    ema, raw = _official_train_dict(arch, 1), _official_train_dict(arch, 2)
    path = tmp_path / 'official.pth.tar'
    torch.save({'epoch': 299, 'arch': 'repghostnet', 'args': __import__('argparse').Namespace(lr=0.6),
                'state_dict': {f'module.{k}': v for k, v in raw.items()},
                'state_dict_ema': {f'module.{k}': v for k, v in ema.items()}}, path)
    model = RepGhostNet(arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    report = model.init_report
    assert report.wrapper_key == 'state_dict_ema'
    assert not report.missing and not report.unexpected and not report.mismatched
    head = ['classifier.bias', 'classifier.weight', 'conv_head.bias', 'conv_head.weight']
    # blocks.9 (the final 1x1 conv) is only built when out_indices asks for feature 4
    assert sorted(k for k in report.ignored if not k.startswith('blocks.9.')) == head
    assert len(report.ignored) == 4 + 6 and not any(k.startswith('blocks.9.') for k in model.state_dict())
    with_final = RepGhostNet(arch, out_indices=(0, 1, 2, 3, 4))
    assert sorted(with_final.load_pretrained(str(path)).ignored) == head
    own = model.state_dict()
    assert all(torch.equal(own[k], ema[k]) for k in own)
    # the classifier form takes every key of the file
    clf = RepGhostNetClassifier(arch)
    clf.load_pretrained(str(path), checkpoint_key='state_dict')
    assert all(torch.equal(v, raw[k]) for k, v in clf.state_dict().items())


@pytest.mark.parametrize('arch', ['0.5x', '1.0x', '2.0x'])
def test_official_converted_checkpoint_loads_into_deploy_model(arch):
    """The official convert fuses only the RepGhost branches; loading folds the remaining BNs."""
    clf = randomize_bn(RepGhostNetClassifier(arch)).eval()
    x = torch.randn(1, 3, 97, 123)
    ref = clf(x)
    for m in clf.modules():
        if isinstance(m, RepGhostModule):
            fuse_ghost_branches(m)
    official = clf.state_dict()
    expected = synthetic_state_dict(keys_file(f'repghostnet_{FILE_NAMES[arch]}.fused_keys.txt'))
    assert {k: tuple(v.shape) for k, v in official.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    deploy = RepGhostNetClassifier(arch, deploy=True).eval()
    deploy.load_backbone_state_dict(official)
    out = deploy(x)
    assert_rel_close(ref, out)
    # and the backbone alone, with the head keys reported
    backbone = RepGhostNet(arch, deploy=True, out_indices=(4,))
    report = backbone.load_backbone_state_dict(official)
    assert len(report.ignored) == 4 and not report.missing


def test_official_fused_file_is_used_as_the_official_model_uses_it():
    """A file with the official converted release's keys and shapes (tests/data/keys) and random values that
    no converter of this package computed, loaded into ``deploy=True``: each conv+BN pair the official
    converter keeps is folded as computed here from the file's own values (the conv is the key just before
    its BN in the release's order); every other tensor is taken as it is."""
    keys = [line.split(' ', 1)[0] for line in open(keys_file('repghostnet_1_0x.fused_keys.txt')) if line.strip()]
    official = synthetic_state_dict(keys_file('repghostnet_1_0x.fused_keys.txt'), seed=3)
    model = RepGhostNetClassifier('1.0x', deploy=True)
    model.load_backbone_state_dict(official)
    own = model.state_dict()
    folded = set()
    for i, key in enumerate(keys):
        if not key.endswith('.running_var'):
            continue
        bn = key[:-len('.running_var')]
        conv = keys[keys.index(f'{bn}.weight') - 1][:-len('.weight')]
        scale = official[f'{bn}.weight'] / torch.sqrt(official[f'{bn}.running_var'] + 1e-5)
        shift = official[f'{bn}.bias'] - official[f'{bn}.running_mean'] * scale
        torch.testing.assert_close(own[f'{conv}.weight'], official[f'{conv}.weight'] * scale[:, None, None, None])
        torch.testing.assert_close(own[f'{conv}.bias'], shift + scale * official.get(f'{conv}.bias', 0))
        folded |= {f'{conv}.weight', f'{conv}.bias'}
    assert len(folded) == 2 * 48                                   # the 48 BNs of the official converted 1.0x
    assert set(own) - folded <= set(official)
    assert all(torch.equal(own[k], official[k]) for k in set(own) - folded)


def test_wrong_form_and_bad_files(tmp_path):
    train = _official_train_dict('0.5x')
    with pytest.raises(CheckpointError, match='train-form checkpoint but the model is in deploy form'):
        RepGhostNet('0.5x', deploy=True).load_backbone_state_dict(train)
    fused = RepGhostNet('0.5x', deploy=True).state_dict()
    with pytest.raises(CheckpointError, match='deploy-form checkpoint but the model is in train form'):
        RepGhostNet('0.5x').load_backbone_state_dict(fused)
    missing = RepGhostNet('0.5x', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'nope.pth')))
    with pytest.raises(CheckpointError, match="pretrained checkpoint .*nope.pth' not found"):
        missing.init_weights()
    corrupt = tmp_path / 'corrupt.pth'
    torch.save(train, corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match='corrupt'):
        RepGhostNet('0.5x').load_pretrained(str(corrupt))
    partial = dict(train)
    partial.pop('blocks.3.0.ghost1.primary_conv.0.weight')
    with pytest.raises(CheckpointError, match='missing 1 keys: blocks.3.0.ghost1.primary_conv.0.weight'):
        RepGhostNet('0.5x').load_backbone_state_dict(partial)
    with pytest.raises(CheckpointError, match='not a RepGhostNet state dict'):
        RepGhostNet('0.5x').load_backbone_state_dict({'foo.weight': torch.zeros(1)})


class _Payload:
    def __reduce__(self):
        return (print, ('this would run on load',))


def test_untrusted_pickle_is_refused(tmp_path, monkeypatch):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': RepGhostNet('0.5x').state_dict(), 'extra': _Payload()}, path)
    with pytest.raises(UntrustedCheckpointError, match='REP_BACKBONES_TRUST_CHECKPOINTS=1'):
        RepGhostNet('0.5x').load_pretrained(str(path))
    monkeypatch.setenv('REP_BACKBONES_TRUST_CHECKPOINTS', '1')
    assert RepGhostNet('0.5x').load_pretrained(str(path)).loaded


def test_prefix_selects_backbone_of_a_detector_checkpoint(tmp_path):
    source = randomize_bn(RepGhostNet('0.5x'))
    path = tmp_path / 'det.pth'
    torch.save({'meta': {}, 'state_dict': {**{f'backbone.{k}': v for k, v in source.state_dict().items()},
                                           'neck.conv.weight': torch.zeros(1)}}, path)
    model = RepGhostNet('0.5x', init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="prefix 'head.'"):
        RepGhostNet('0.5x').load_pretrained(str(path), prefix='head')


# -- paper table ----------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', list(ARCHS))
def test_classifier_reproduces_seed_params_and_flops(arch):
    clf = RepGhostNetClassifier(arch)
    official = copy.deepcopy(clf)
    for m in official.modules():
        if isinstance(m, RepGhostModule):
            fuse_ghost_branches(m)
    clf.switch_to_deploy()
    seed_params, seed_macs = PAPER[arch]
    # The paper counted the official converted model (RepGhost branches fused, conv+BN pairs kept).
    assert round(count_params(official) / 1e6, 1) == seed_params
    # Our full fusion folds the remaining BNs too: fewer parameters, same MACs.
    assert count_params(clf) < count_params(official)
    assert round(count_macs(clf, 224) / 1e6) == seed_macs
    assert count_macs(clf, 224) == count_macs(official, 224)
