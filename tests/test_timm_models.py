"""The classifier forms as timm models (rep_backbones/timm_models.py): registration, forward and
backward at the default input size, features_only equal to the mm backbone, TorchScript of the fused
form, and pretrained=True reading an official-layout file. timm's model contract (widths, cfg names,
feature wrappers, FX, reset_classifier, ...) is tested in test_timm_contract.py."""
import pytest
import timm
import torch
from timm.utils.model import reparameterize_model

import rep_backbones
from rep_backbones.models import BACKBONES
from rep_backbones.timm_models import MODELS

from .helpers import calibrate_bn, keys_file, randomize_bn, synthetic_state_dict

pytestmark = pytest.mark.slow

NAMES = sorted(MODELS)
FAMILY = {'repghostnetv2': 'RepGhostNetV2', 'repnext': 'RepNeXt', 'repmobile': 'RepMobile'}


def _family(name: str) -> str:
    return FAMILY[name.split('_')[0]]


def test_every_variant_is_registered_and_timm_names_are_not_shadowed():
    assert set(NAMES) == {f'repghostnetv2_{a}' for a in 'sml'} | {f'repmobile_{a}' for a in 'sml'} | {
        f'repnext_m{i}' for i in range(6)} | {f'repnext_m{i}e' for i in range(3)}
    assert set(NAMES) <= set(timm.list_models())
    # timm's own RepGhostNet / MobileNetV4 stay timm's, and the mm backbones accept their names
    assert type(timm.create_model('repghostnet_100')).__module__.startswith('timm.')
    assert BACKBONES['RepGhostNet'](arch='repghostnet_130').arch == '1.3x'
    assert BACKBONES['MobileNetV4'](arch='mobilenetv4_conv_small').arch == 'S'
    assert BACKBONES['RepNeXt'](arch='repnext_m3').arch == 'M3'
    cfg = timm.create_model('repnext_m3').pretrained_cfg
    assert cfg['url'].endswith('/v1.0/repnext_m3_distill_300e.pth')
    assert 'release file: repnext_m3_distill_300e.pth' in cfg['notes']


@pytest.mark.parametrize('name', NAMES)
def test_forward_and_backward_at_the_default_input_size(name):
    torch.manual_seed(0)
    model = timm.create_model(name)
    size = model.pretrained_cfg['input_size']
    # batch 2: RepMobile's gate has a BatchNorm after global pooling, which cannot train on one value
    # per channel
    out = model(torch.randn(2, *size))
    assert out.shape == (2, 1000)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model.forward_head(model.forward_features(x)), model(x))


@pytest.mark.parametrize('name', ['repghostnetv2_s', 'repnext_m0', 'repnext_m0e', 'repmobile_s'])
def test_features_only_equal_the_mm_backbone_and_fused_forms_export(name):
    cls, arch, _ = MODELS[name]
    torch.manual_seed(0)
    full = timm.create_model(name)
    torch.manual_seed(0)                                       # same draws: the same weights
    features = timm.create_model(name, features_only=True, out_indices=(0, 1, 2, 3)).eval()
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    assert torch.equal(next(features.parameters()), next(full.parameters()))
    backbone = BACKBONES[_family(name)](arch=arch).eval()
    report = backbone.load_backbone_state_dict(full.state_dict())   # head keys reported as ignored
    assert not report.missing and report.ignored
    x = torch.randn(1, 3, 67, 75)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(features(x), backbone(x)))

    # reparameterize_model fuses; the fused classifier exports (torch.export) and traces
    model = randomize_bn(timm.create_model(name)).eval()
    fused = reparameterize_model(model)
    assert fused.deploy and not model.deploy
    with torch.no_grad():
        ref = model(x)
        assert (fused(x) - ref).abs().max() <= 1e-4 * ref.abs().max()
        program = torch.export.export(fused, (x,))
        assert (program.module()(x) - ref).abs().max() <= 1e-4 * ref.abs().max()


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:FutureWarning')
@pytest.mark.parametrize('name', NAMES)
def test_fused_model_scripts_and_equals_eager(name):
    """TorchScript of the fused form: ``torch.jit.script`` compiles it and the scripted model
    computes the eager fused model's output, at an odd input size (border corrections included)."""
    model = timm.create_model(name)
    x = torch.randn(2, 3, 97, 131)
    # non-trivial BN state, so that fused biases and border taps are not zero (RepMobile: measured
    # statistics, fully random ones blow its deep plain stages up in float32)
    if name.startswith('repmobile'):
        calibrate_bn(model, x)
    else:
        randomize_bn(model)
    fused = reparameterize_model(model.eval())
    scripted = torch.jit.script(fused)
    with torch.no_grad():
        ref = fused(x[:1])
        for _ in range(3):          # the profiling executor optimizes the graph after the first runs
            out = scripted(x[:1])
    assert out.shape == ref.shape == (1, 1000)
    assert (out - ref).abs().max() <= 1e-6 * ref.abs().max()


@pytest.mark.parametrize('name,keys', [('repnext_m0', 'repnext_m0.keys.txt'),
                                       ('repghostnetv2_s', 'repghostnetv2_small.keys.txt'),
                                       ('repmobile_s', 'repmobile_S.keys.txt')])
def test_pretrained_loads_an_official_file(tmp_path, name, keys):
    official = synthetic_state_dict(keys_file(keys))
    path = tmp_path / 'official.pth'
    torch.save({'model': official}, path)                     # DeiT-style wrapper, official key layout
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    expected = rep_backbones.build_classifier(_family(name), arch=MODELS[name][1])
    expected.load_backbone_state_dict(official)
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in model.state_dict().items())
