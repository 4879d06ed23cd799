"""The contract every registered backbone variant keeps (family files test only their own math and
checkpoint layouts): variant names, out_indices, frozen_stages, norm_eval, with_cp, wrong-form
checkpoints, a gradient for every parameter, and one fused model whichever entry point fuses it —
``rep_backbones.fuse``,
``switch_to_deploy()`` or ``timm.utils.model.reparameterize_model`` — equal to the training form in
eval mode at an odd input size with non-trivial BN statistics, with no BatchNorm left; and the fused
backbone compiles with ``torch.jit.script`` to the same maps."""
import copy

import pytest
import torch
from timm.utils.model import reparameterize_model

import rep_backbones
from rep_backbones.checkpoint import CheckpointError
from rep_backbones.models import BACKBONES

from .helpers import assert_fusion_exact, assert_rel_close, calibrate_bn, count_norms, randomize_bn

# The package's own families. TimmRepBackbone (any timm net; its "variants" are timm model names) keeps
# the same contract in tests/test_timm_backbone.py (float64 included: assert_fusion_exact builds the layers
# timm's fusers make in float64 too).
FAMILIES = sorted(n for n in BACKBONES if n != 'TimmRepBackbone')


def _variant(name, arch):
    """Every variant runs in the full suite; the core suite (``-m 'not slow'``) keeps each family's
    representative variants (``representative_archs``)."""
    core = arch in BACKBONES[name].representative_archs
    return pytest.param(name, arch, id=f'{name}-{arch}', marks=() if core else pytest.mark.slow)


VARIANTS = [_variant(name, arch) for name in FAMILIES for arch in BACKBONES[name].arch_settings]
SMALL_ODD = (67, 75)


def _build(name, arch, **kwargs):
    return BACKBONES[name](arch=arch, **kwargs)


def _nontrivial_bn(model, x):
    # RepMobile's deep plain stages blow fully random BN statistics up in float32 (see
    # tests/test_repmobile.py): measured statistics with random affine keep the comparison about the
    # algebra. Every other family gets fully random statistics.
    return calibrate_bn(model, x) if type(model).__name__ == 'RepMobile' else randomize_bn(model)


@pytest.mark.parametrize('name,arch', VARIANTS)
def test_every_fusion_entry_point_gives_the_same_exact_model(name, arch):
    torch.manual_seed(0)
    model = _build(name, arch)
    x = torch.randn(2, 3, *SMALL_ODD)
    _nontrivial_bn(model, x).eval()
    by_fuse = rep_backbones.fuse(copy.deepcopy(model))
    by_switch = copy.deepcopy(model)
    by_switch.switch_to_deploy()
    by_timm = reparameterize_model(model)                      # deep copy by default
    assert not model.deploy and count_norms(model) > 0
    for fused in (by_fuse, by_switch, by_timm):
        assert fused.deploy and count_norms(fused) == 0
        assert not any(m.training for m in fused.modules())     # made by fusion, still in eval mode
        assert fused.state_dict().keys() == by_fuse.state_dict().keys()
    with torch.no_grad():
        ref, outs = model(x), [f(x) for f in (by_fuse, by_switch, by_timm)]
    for out in outs[1:]:                                       # the three entry points: one model
        assert all(torch.equal(a, b) for a, b in zip(outs[0], out))
    assert [o.shape for o in outs[0]] == [r.shape for r in ref]
    # the deploy form keeps its weights in the family's measured-fastest memory format, and returns
    # plain NCHW maps (compiled ops downstream, e.g. mmcv's RoIAlign, read raw NCHW memory)
    weights = [m.weight for m in by_fuse.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert all(w.is_contiguous(memory_format=BACKBONES[name].deploy_memory_format) for w in weights)
    assert all(o.is_contiguous() for o in outs[0])
    assert_fusion_exact(model, by_fuse, x, rep_backbones.fuse)
    built = _build(name, arch, deploy=True)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in by_fuse.state_dict().items()}
    rep_backbones.fuse(by_fuse)                                # fusing twice is a no-op
    assert by_fuse.state_dict().keys() == built.state_dict().keys()


@pytest.mark.parametrize('name,arch', VARIANTS)
def test_every_parameter_gets_a_gradient(name, arch):
    """A loss on every output reaches every trainable parameter: DDP (the mission's 8-GPU training) needs
    no ``find_unused_parameters``. The neck of every shipped config takes all four maps; inside a real
    detector: tests/test_backbones_in_detectors.py."""
    model = _build(name, arch).train()
    sum(o.square().mean() for o in model(torch.randn(2, 3, *SMALL_ODD))).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f'parameters without gradient (DDP would fail): {unused[:5]}'


@pytest.mark.parametrize('name,arch', VARIANTS)
def test_variant_names_outputs_and_wrong_form_checkpoints(name, arch):
    cls = BACKBONES[name]
    assert cls(arch=arch.lower()).arch == arch
    for alias, target in cls.arch_aliases.items():
        if target == arch:
            assert cls(arch=alias.upper()).arch == arch
    model = cls(arch=arch)
    n = len(model.feature_info)
    assert model.out_indices == (0, 1, 2, 3) and model.out_strides == [4, 8, 16, 32]
    assert model.out_channels == [f['num_chs'] for f in model.feature_info[:4]]
    with pytest.raises(ValueError, match=rf'out_indices .*out of range.*0..{n - 1}'):
        cls(arch=arch, out_indices=(0, n))
    with pytest.raises(ValueError, match='frozen_stages'):
        cls(arch=arch, frozen_stages=n + 1)
    deploy = cls(arch=arch, deploy=True)
    with pytest.raises(CheckpointError, match='train-form checkpoint but the model is in deploy form'):
        deploy.load_backbone_state_dict(model.state_dict())
    with pytest.raises(CheckpointError, match='deploy-form checkpoint but the model is in train form'):
        model.load_backbone_state_dict(deploy.state_dict())


@pytest.mark.parametrize('name', FAMILIES)
def test_unknown_variant_lists_the_valid_ones(name):
    cls = BACKBONES[name]
    with pytest.raises(ValueError, match=rf"unknown arch 'no-such-net'.*{next(iter(cls.arch_settings))!r}"):
        cls(arch='no-such-net')


@pytest.mark.parametrize('name', FAMILIES)
def test_frozen_stages_norm_eval_and_with_cp(name, monkeypatch):
    torch.manual_seed(0)
    cls = BACKBONES[name]
    arch = next(iter(cls.arch_settings))
    model = cls(arch=arch, frozen_stages=1, norm_eval=True).train()
    stages = model.feature_stages()
    for module in (m for modules in stages[:2] for m in modules):
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules())
    assert all(p.requires_grad for m in stages[2] for p in m.parameters())
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))

    # with_cp: the same gradients (train mode, no freezing)
    plain = cls(arch=arch).train()
    checkpointed = cls(arch=arch, with_cp=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    import rep_backbones.models.base as base
    calls = []
    monkeypatch.setattr(base, 'checkpoint',
                        lambda fn, *a, **k: calls.append(fn) or torch.utils.checkpoint.checkpoint(fn, *a, **k))
    grads = []
    for net in (plain, checkpointed):
        sum(o.square().mean() for o in net(x)).backward()
        grads.append({k: p.grad.clone() for k, p in net.named_parameters()})
    assert len(calls) >= 5                                     # stem + blocks were recomputed
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        assert torch.allclose(grads[0][key], grads[1][key], rtol=1e-4, atol=1e-6), key


SCRIPT_CASES = {f'{name}-default': (name, {}) for name in FAMILIES}
SCRIPT_CASES.update({
    'RepGhostNet-final-conv': ('RepGhostNet', dict(out_indices=(1, 4))),    # the final 1x1 conv, an early tap
    'MobileNetV4-final-conv': ('MobileNetV4', dict(out_indices=(0, 2, 4))),
    'RepGhostNetV2-rep-bn-one-map': ('RepGhostNetV2', dict(reparam_bn=True, out_indices=(2,))),  # stops early
    'RepNeXt-single-branch': ('RepNeXt', dict(fusion_level=2)),       # level 2: border term, cat order
    'RepMobile-two-maps': ('RepMobile', dict(out_indices=(1, 3)))})


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:FutureWarning')
@pytest.mark.parametrize('name,kwargs', list(SCRIPT_CASES.values()), ids=list(SCRIPT_CASES))
def test_fused_backbone_scripts_and_equals_eager(name, kwargs):
    """TorchScript of the fused mm backbone: ``torch.jit.script`` compiles it and the scripted model
    returns the same maps (a list: TorchScript has no variable-length tuples) at an odd input size."""
    model = _build(name, next(iter(BACKBONES[name].arch_settings)), **kwargs)
    x = torch.randn(2, 3, 97, 131)
    _nontrivial_bn(model, x).eval().switch_to_deploy()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        ref = model(x[:1])
        for _ in range(3):          # the profiling executor optimizes the graph after the first runs
            outs = scripted(x[:1])
    assert isinstance(outs, list) and len(outs) == len(ref) == len(model.out_indices)
    assert_rel_close(ref, outs, rtol=1e-6, what='scripted map')


@pytest.mark.parametrize('name', FAMILIES)
def test_official_form_and_int8_layout_keep_the_function(name):
    """``official_fused`` (where the family has an official converter; ``NoOfficialForm`` otherwise) and
    ``to_int8_layout`` (on the fused backbone only) change the graph, never the eval-mode function."""
    from rep_backbones.fusion import NoOfficialForm, official_fused
    arch = BACKBONES[name].representative_archs[0]
    torch.manual_seed(0)
    x = torch.randn(2, 3, *SMALL_ODD)
    model = _nontrivial_bn(_build(name, arch), x).eval()
    with torch.no_grad():
        ref = model(x)
        try:
            official = official_fused(model)
        except NoOfficialForm:
            assert name not in ('RepGhostNet', 'RepNeXt')
        else:
            assert not model.deploy and 0 < count_norms(official) < count_norms(model)
            assert_rel_close(official(x), ref)
        with pytest.raises(ValueError, match='not fused'):
            model.to_int8_layout()
        fused = rep_backbones.fuse(copy.deepcopy(model))
        assert fused.to_int8_layout() == BACKBONES[name].int8_layout
        # float32 rounding moves with the graph (RepMobile's split shortcut adds x outside the kernel)
        assert_rel_close(fused(x), ref, rtol=1e-3)
