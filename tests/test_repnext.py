"""RepNeXt M0-M5 / M0E-M2E: structure, both fusion levels, freezing, checkpoints, seed counts."""
import copy

import pytest
import torch
from torch import nn

import rep_backbones
from rep_backbones.checkpoint import CheckpointError
from rep_backbones.complexity import count_macs, count_params
from rep_backbones.models import RepNeXt, RepNeXtClassifier
from rep_backbones.models.repnext import (
    ARCHS,
    ChunkConv,
    CopyConv,
    CopyConvSingle,
    Downsample,
    SingleBranchDWConv,
    to_official_form,
)

from .helpers import (
    ODD_SIZE,
    assert_fuses_exactly,
    assert_fusion_exact,
    assert_rel_close,
    count_norms,
    keys_file,
    randomize_bn,
    synthetic_state_dict,
)

M_ARCHS = ['M0', 'M1', 'M2', 'M3', 'M4', 'M5']
E_ARCHS = ['M0E', 'M1E', 'M2E']
# ARCHITECTURES.md §3.1 [measured on the official code]: classifier params in training form (two
# distillation heads) and after the official fuse (RepDWConv*, ConvNorm and heads fused; the
# standalone ``norm`` BNs and the serial conv_l pair kept), fused MACs at 224.
PAPER = {'M0': (2_716_480, 2_333_200, 0.388), 'M1': (5_323_316, 4_829_560, 0.822),
        'M2': (7_049_082, 6_473_200, 1.111), 'M3': (8_466_560, 7_818_920, 1.339),
        'M4': (14_080_480, 13_342_120, 2.289), 'M5': (22_708_860, 21_737_560, 4.544)}
SEED_E = {'M0E': 2.5, 'M1E': 5.3, 'M2E': 7.0}   # README, millions, rounded (official fused convention)
SMALL_ODD = (35, 45)


pytestmark = pytest.mark.usefixtures('one_thread')   # many tiny depthwise convs: threads only add overhead


def _single_branch(model):
    return model.to_single_branch()


def _via_level1(model):
    return rep_backbones.fuse(model).to_single_branch()


def _level2_matches(model, x, fuse_fn=_single_branch, float64=True):
    """Level 2 (single branch) made by ``fuse_fn`` from a copy of ``model`` (eval, random BN) equals the
    training form (float64 algebra and float32 outputs: :func:`assert_fusion_exact`)."""
    fused = fuse_fn(copy.deepcopy(model))
    assert_fusion_exact(model, fused, x, fuse_fn, float64=float64)
    assert count_norms(fused) == 0
    mixers = [m for m in fused.modules() if isinstance(m, (ChunkConv, CopyConv))]
    assert not mixers
    return fused


# -- fusion --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', [a if a in RepNeXt.representative_archs else pytest.param(a, marks=pytest.mark.slow)
                                  for a in M_ARCHS + E_ARCHS])     # the core suite: M0 and M0E
def test_fused_equals_training_form_at_both_levels(arch):
    torch.manual_seed(0)
    model = RepNeXt(arch)
    size = ODD_SIZE if arch in ('M0', 'M0E') else SMALL_ODD   # one detection-sized check per kind
    x = torch.randn(1, 3, *size)
    # level 1 (switch_to_deploy / rep_backbones.fuse); its float64 check: test_backbone_contract.py
    fused = assert_fuses_exactly(model, x, float64=False)
    assert count_norms(fused) == 0 and fused.deploy and not model.deploy
    assert [o.shape[1] for o in fused(x)] == list(ARCHS[arch].embed_dim)
    level1_keys = fused.state_dict().keys()
    single = _level2_matches(model, x, _via_level1, float64=arch in ('M0', 'M0E'))   # float64: one per kind
    assert sum(isinstance(m, SingleBranchDWConv) for m in single.modules()) == sum(ARCHS[arch].depth)
    assert sum(isinstance(m, CopyConvSingle) for m in single.modules()) == 3
    if arch in E_ARCHS:  # already single-branch: both levels are the same structure
        assert level1_keys == single.state_dict().keys()


@pytest.mark.slow           # every variant, three forms each
def test_level2_from_level1_and_constructor_forms():
    model = randomize_bn(RepNeXt('M1')).eval()
    x = torch.randn(1, 3, 35, 45)
    level1 = rep_backbones.fuse(copy.deepcopy(model))
    _level2_matches(model, x, _via_level1)
    _level2_matches(model, x, lambda m: rep_backbones.fuse(_copy_into(RepNeXt('M1', fusion_level=2), m)))
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(RepNeXt('M1', deploy=True)) == shapes(level1)
    assert shapes(RepNeXt('M1', deploy=True, fusion_level=2)) == shapes(level1.to_single_branch())
    before = {k: v.clone() for k, v in level1.state_dict().items()}
    rep_backbones.fuse(level1)
    assert all(torch.equal(v, level1.state_dict()[k]) for k, v in before.items())


def _copy_into(target, source):
    target.load_state_dict(source.state_dict())
    return target.eval()


def test_level2_border_term_is_what_keeps_it_exact():
    model = randomize_bn(RepNeXt('M0')).eval()
    block = model.stages[0].blocks[0]
    x = torch.randn(1, 40, 21, 19)
    with torch.no_grad():
        ref = block.norm(block.token_mixer(x))
        conv = copy.deepcopy(model).to_single_branch().stages[0].blocks[0].token_mixer
        assert_rel_close(ref, conv(x), rtol=1e-5)
        assert conv.border[:30].abs().max() == 0 and conv.border[30:].abs().max() > 0   # conv_l chunk only
        conv.border.zero_()
        diff = (conv(x) - ref).abs()
    assert diff[:, :, 5:-5].max() <= 1e-5 * ref.abs().max()      # interior: plain 11x11 is exact
    assert diff[:, 30:, :5].max() > 1e-3                          # top rows: conv_l.0's bias


def test_syncbn_and_classifier_fuse_exactly():
    model = RepNeXt('M0', norm_cfg=dict(type='SyncBN', eps=1e-3))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(isinstance(m, nn.SyncBatchNorm) and m.eps == 1e-3 for m in norms)
    assert_fuses_exactly(model, torch.randn(1, 3, 43, 37))
    clf = RepNeXtClassifier('M0', num_classes=10)
    fused = assert_fuses_exactly(clf, torch.randn(2, 3, 64, 64))
    assert isinstance(fused.head, nn.Linear) and count_norms(fused) == 0
    _level2_matches(clf, torch.randn(2, 3, 64, 64))


def test_fuse_whole_model_and_report():
    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = RepNeXt('M0', out_indices=(1, 3))
            self.neck = nn.Conv2d(320, 8, 1)

    det = Detector()
    report = rep_backbones.fuse_with_report(det)
    assert report.fused == ['backbone'] and report.params_after < report.params_before
    assert rep_backbones.fuse_with_report(det).fused == []


# -- outputs, names, training behaviour ------------------------------------------------------------------
@pytest.mark.parametrize('arch', M_ARCHS + E_ARCHS)
def test_out_indices_and_channels(arch):
    model = RepNeXt(arch, out_indices=(1, 3))
    assert model.out_channels == [ARCHS[arch].embed_dim[1], ARCHS[arch].embed_dim[3]]
    assert model.out_strides == [8, 32]
    assert RepNeXt(arch).out_strides == [4, 8, 16, 32]


def test_forward_shapes_and_out_indices():
    model = RepNeXt('M0', out_indices=(-1, 0)).eval()
    outs = model(torch.randn(1, 3, *ODD_SIZE))
    assert [tuple(o.shape) for o in outs] == [(1, 40, 63, 83), (1, 320, 8, 11)]
    with pytest.raises(ValueError, match='out of range'):
        RepNeXt('M0', out_indices=(4,))


def test_arch_names_and_errors():
    assert RepNeXt('m3').arch == 'M3' and RepNeXt('repnext_m0e').arch == 'M0E'
    assert RepNeXt('RepNeXt-M2E').arch == 'M2E'
    with pytest.raises(ValueError, match="valid variants: 'M0', 'M1', .*'M5', 'M0E', 'M1E', 'M2E'"):
        RepNeXt('M6')
    assert rep_backbones.build_backbone('RepNeXt', arch='M0').arch == 'M0'
    assert type(rep_backbones.build_classifier('RepNeXt', arch='M0')) is RepNeXtClassifier


def test_frozen_stages():
    model = RepNeXt('M0', frozen_stages=2)
    model.train()
    stages = model.stages
    for module in (model.stem, stages[0], stages[1]):
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules())
    assert all(p.requires_grad for p in stages[2].parameters()) and stages[2].training
    model.switch_to_deploy()
    assert not any(p.requires_grad for p in stages[1].parameters()) and stages[3].training


@pytest.mark.parametrize('norm_cfg', [None, dict(type='SyncBN')])
def test_norm_eval_keeps_bn_and_syncbn_in_eval(norm_cfg):
    model = RepNeXt('M0', norm_eval=True, norm_cfg=norm_cfg)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and (norm_cfg is None or all(isinstance(m, nn.SyncBatchNorm) for m in norms))
    model.train()
    before = [m.running_mean.clone() for m in norms]
    if norm_cfg is None:  # SyncBN cannot run a training forward without a process group
        model(torch.randn(2, 3, 64, 64))
    assert all(not m.training for m in norms)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))
    assert model.stages[0].training  # only the norms are in eval


def test_drop_path_is_identity_in_eval():
    model = RepNeXt('M0', drop_path_rate=0.3)
    plain = _copy_into(RepNeXt('M0'), model)
    rates = [getattr(b.drop_path, 'drop_prob', 0.0) for s in model.stages for b in s.blocks]
    assert rates[0] == 0 and abs(rates[-1] - 0.3) < 1e-6 and rates == sorted(rates)
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x), plain(x)))
        torch.manual_seed(0)
        fused = rep_backbones.fuse(copy.deepcopy(model))
        assert_rel_close(plain(x), fused(x))


# -- checkpoints ---------------------------------------------------------------------------------------
def _official(arch, fused=False, seed=0):
    name = f'repnext_{arch.lower()}.{"fused_keys" if fused else "keys"}.txt'
    return synthetic_state_dict(keys_file(name), seed)


@pytest.mark.parametrize('arch', M_ARCHS)
def test_key_names_and_shapes_equal_official(arch):
    official = {k: tuple(v.shape) for k, v in _official(arch).items()}
    ours = {k: tuple(v.shape) for k, v in RepNeXtClassifier(arch).state_dict().items()}
    assert ours == official


def test_official_training_checkpoint_loads(tmp_path):
    sd = _official('M0', seed=1)
    path = tmp_path / 'repnext_m0_distill_300e.pth'
    torch.save({'model': sd, 'epoch': 299, 'args': __import__('argparse').Namespace(lr=1e-3)}, path)
    model = RepNeXt('M0', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    report = model.init_report
    assert report.wrapper_key == 'model' and not report.missing and not report.unexpected
    assert len(report.ignored) == 14 and all(k.startswith('head.') for k in report.ignored)
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
    clf = RepNeXtClassifier('M0')
    report = clf.load_pretrained(str(path))
    assert not report.ignored and all(torch.equal(v, sd[k]) for k, v in clf.state_dict().items())
    # bare dict and timm-style wrapper too
    torch.save({'state_dict_ema': sd}, tmp_path / 'm0.pth.tar')
    assert RepNeXt('M0').load_pretrained(str(tmp_path / 'm0.pth.tar')).wrapper_key == 'state_dict_ema'
    torch.save(sd, tmp_path / 'bare.pth')
    assert not RepNeXt('M0').load_pretrained(str(tmp_path / 'bare.pth')).missing


def _official_fuse(clf):
    """What the official ``model.fuse()`` produces, on our modules: branches, ConvNorms and the
    heads fused; the standalone ``norm`` BNs kept, no ``conv_i``."""
    return to_official_form(copy.deepcopy(clf)).state_dict()


def test_official_fused_checkpoint_loads_into_deploy_model():
    clf = randomize_bn(RepNeXtClassifier('M0')).eval()
    x = torch.randn(1, 3, 67, 75)
    with torch.no_grad():
        ref = clf(x)
    official = _official_fuse(clf)
    expected = {k: tuple(v.shape) for k, v in _official('M0', fused=True).items()}
    assert {k: tuple(v.shape) for k, v in official.items()} == expected
    deploy = RepNeXtClassifier('M0', deploy=True).eval()
    deploy.load_backbone_state_dict(dict(official))
    with torch.no_grad():
        assert_rel_close(ref, deploy(x))
    backbone = RepNeXt('M0', deploy=True)
    report = backbone.load_backbone_state_dict(dict(official))
    assert report.ignored == ['head.weight', 'head.bias'] and not report.missing
    # and then on to the single-branch form
    backbone.eval().to_single_branch()
    with torch.no_grad():
        assert_rel_close(RepNeXt.forward(clf, x)[0], backbone(x)[-1])


def test_official_fused_file_is_used_as_the_official_model_uses_it():
    """A file with the official fused release's keys and shapes (tests/data/keys) and random values that no
    converter of this package computed, loaded into ``deploy=True``: each block's standalone ``norm`` (kept
    by the official fuse) is folded into the block's first channel-mixer conv as computed here from the
    file's own values; the downsamples' norms go into their token mixers; every other tensor is taken as
    it is."""
    official = synthetic_state_dict(keys_file('repnext_m0.fused_keys.txt'), seed=3)
    model = RepNeXtClassifier('M0', deploy=True)
    model.load_backbone_state_dict(dict(official))
    own = model.state_dict()
    norms = sorted(k[:-len('.running_var')] for k in official if k.endswith('.norm.running_var'))
    blocks = [n[:-len('.norm')] for n in norms if '.blocks.' in n]
    assert len(norms) == 17 and len(blocks) == 14
    for unit in blocks:
        norm = official[f'{unit}.norm.weight'], official[f'{unit}.norm.bias'], \
            official[f'{unit}.norm.running_mean'], official[f'{unit}.norm.running_var']
        scale = norm[0] / torch.sqrt(norm[3] + 1e-5)
        shift = norm[1] - norm[2] * scale
        weight, bias = official[f'{unit}.channel_mixer.0.weight'], official[f'{unit}.channel_mixer.0.bias']
        torch.testing.assert_close(own[f'{unit}.channel_mixer.0.weight'], weight * scale[None, :, None, None])
        torch.testing.assert_close(own[f'{unit}.channel_mixer.0.bias'], bias + weight[:, :, 0, 0] @ shift)
    downsamples = tuple(n[:-len('norm')] + 'token_mixer.' for n in norms if '.blocks.' not in n)
    changed = {k for k in own if not torch.equal(own[k], official[k])}
    assert changed == {f'{u}.channel_mixer.0.{p}' for u in blocks for p in ('weight', 'bias')} | \
        {k for k in own if k.startswith(downsamples)}
    assert set(own) == {k for k in official if '.norm.' not in k}


@pytest.mark.parametrize('fold', ['forward', 'backward'])
def test_block_norm_fold_sides_are_exact_and_checkpoints_name_theirs(fold):
    """Both level-1 layouts equal the training form; 'forward' passes the identity chunk through
    (no ``conv_i``), 'backward' has it; each fused file loads into its own layout and the official
    fused file into both; a fused file of the other layout is refused with the argument to pass."""
    train = RepNeXt('M0', block_norm_fold=fold)
    fused = assert_fuses_exactly(train, torch.randn(1, 3, 67, 93))          # odd size
    has_conv_i = any(isinstance(m, ChunkConv) and not isinstance(m.conv_i, nn.Identity) for m in fused.modules())
    assert has_conv_i == (fold == 'backward')
    RepNeXt('M0', deploy=True, block_norm_fold=fold).load_backbone_state_dict(fused.state_dict())
    official = _official_fuse(RepNeXtClassifier('M0'))
    RepNeXt('M0', deploy=True, block_norm_fold=fold).load_backbone_state_dict(official)
    other = 'backward' if fold == 'forward' else 'forward'
    with pytest.raises(CheckpointError, match=f"build the model with block_norm_fold='{fold}'"):
        RepNeXt('M0', deploy=True, block_norm_fold=other).load_backbone_state_dict(fused.state_dict())
    with pytest.raises(ValueError, match='block_norm_fold must be one of'):
        RepNeXt('M0', block_norm_fold='sideways')


def test_wrong_form_and_bad_dicts():
    with pytest.raises(CheckpointError, match='train-form checkpoint but the model is in deploy form'):
        RepNeXt('M0', deploy=True).load_backbone_state_dict(_official('M0'))
    with pytest.raises(CheckpointError, match='deploy-form checkpoint but the model is in train form'):
        RepNeXt('M0').load_backbone_state_dict(_official('M0', fused=True))
    with pytest.raises(CheckpointError, match='not a RepNeXt state dict'):
        RepNeXt('M0').load_backbone_state_dict({'foo.weight': torch.zeros(1)})
    with pytest.raises(CheckpointError, match='mismatched'):
        RepNeXt('M1').load_backbone_state_dict(_official('M0'))


# -- complexity ----------------------------------------------------------------------------------------
def _units(model):
    return [u for s in model.stages
            for u in ([s.downsample] if isinstance(s.downsample, Downsample) else []) + list(s.blocks)]


def _norm_and_identity_params(model):
    """Params of the standalone ``norm`` BNs (official fused keeps them; ours folds them) and of the
    identity-chunk convs ``conv_i`` (ours has them; official none); ``model`` in training form."""
    norm = sum(2 * u.norm.num_features for u in _units(model))
    conv_i = sum(u.norm.num_features // 2 for u in _units(model) if isinstance(u.token_mixer, ChunkConv))
    return norm, conv_i


def _conv_i_macs(arch, size=224):
    total, hw = 0, size // 4
    for dim, depth in zip(ARCHS[arch].embed_dim, ARCHS[arch].depth):
        total += depth * dim // 4 * hw * hw
        hw //= 2
    return total


@pytest.mark.parametrize('arch', M_ARCHS)
def test_classifier_reproduces_seed_params_and_macs(arch):
    train_params, official_fused, gmacs = PAPER[arch]
    clf = RepNeXtClassifier(arch)
    assert count_params(clf) == train_params
    norm, conv_i = _norm_and_identity_params(clf)
    fused = rep_backbones.fuse(copy.deepcopy(clf))
    assert count_params(fused) == official_fused - norm     # level 1: the official layout, minus its BNs
    assert round(count_macs(fused, 224) / 1e9, 3) == gmacs
    clf.block_norm_fold = 'backward'                         # the norm in the token mixer: + DW 1x1 conv_i
    backward = rep_backbones.fuse(clf)
    assert count_params(backward) == official_fused - norm + conv_i
    assert count_macs(backward, 224) - count_macs(fused, 224) == _conv_i_macs(arch)
    # the official partially fused file has exactly the paper's parameter count
    official = _official(arch, fused=True)
    assert sum(v.numel() for k, v in official.items()
               if not k.rsplit('.', 1)[-1].startswith(('running_', 'num_batches'))) == official_fused


@pytest.mark.parametrize('arch', E_ARCHS)
def test_e_forms_reproduce_seed_params(arch):
    clf = RepNeXtClassifier(arch)
    norm, _ = _norm_and_identity_params(clf)
    fused = rep_backbones.fuse(clf)
    # paper convention (as for M): heads fused, standalone norms kept
    assert round((count_params(fused) + norm) / 1e6, 1) == SEED_E[arch]
    # the single-branch form of the M model has the same parameters as the E model
    m = rep_backbones.fuse(RepNeXtClassifier(arch[:-1], fusion_level=2))
    assert count_params(m) == count_params(fused)


def test_single_branch_kwarg_is_the_old_spelling_of_fusion_level_2():
    with pytest.warns(DeprecationWarning, match='fusion_level=2'):
        model = RepNeXt('M0', single_branch=True)
    assert model.fusion_level == 2 and RepNeXt('M0').fusion_level == 1 and RepNeXt('M0E').fusion_level == 2
    with pytest.raises(ValueError, match='fusion_level'):
        RepNeXt('M0', fusion_level=3)
