"""timm's model contract for every registered model, checked with timm's own helpers against what the
model computes: the widths, ``pretrained_cfg`` names and sizes, ``feature_info`` and the feature
wrappers, ``reset_classifier``, grad checkpointing, parameter groups, pretrained loading into another
``in_chans`` / ``num_classes``, and FX: ``torch.fx`` and timm's FX feature extraction, the traced
graphs also scripted, in the training and the fused form.

Checks that only need a forward at 64x64 run on every model; the slower ones (FX and TorchScript,
backward passes, extra model builds) on one model per structure (:data:`STRUCTURES`), pretrained loading
on one model per family (those with a reference key list)."""
import copy

import pytest
import timm
import torch
from timm.data import resolve_model_data_config
from timm.layers import create_feature_extractor, get_graph_node_names, is_notrace_module
from timm.models import FeatureGraphNet, adapt_input_conv, group_parameters
from timm.models._features import feature_take_indices
from timm.utils.model import reparameterize_model
from torch import nn

from rep_backbones.timm_models import MODELS

from .helpers import assert_rel_close, calibrate_bn, keys_file, randomize_bn, synthetic_state_dict

pytestmark = pytest.mark.slow

NAMES = sorted(MODELS)
SIZE = 64           # twice the largest stride: every map has more than one pixel, every stride divides it


def _structures():
    """One registered model per set of module types (a family's variants share that code and differ in
    widths and depths; RepNeXt's E forms and RepGhostNetV2-M/L's FusedIB stem stage differ): the smallest."""
    picks = {}
    for name in NAMES:
        model = timm.create_model(name)
        kinds = frozenset(type(m) for m in model.modules())
        size = sum(p.numel() for p in model.parameters())
        if kinds not in picks or size < picks[kinds][0]:
            picks[kinds] = (size, name)
    return sorted(name for _, name in picks.values())


STRUCTURES = _structures()
# FX cases: both forms of each structure, and RepNeXt's single-branch conversion of a multi-branch model
# (its depthwise 11x11 carries a border term that torch.fx records as one call)
FX_CASES = [(name, form) for name in STRUCTURES for form in ('train', 'fused')] + [
    (name, 'single_branch') for name in STRUCTURES if hasattr(MODELS[name][0], 'to_single_branch')
    and not MODELS[name][0].arch_settings[MODELS[name][1]].trained_single_branch]


def _names(model: nn.Module, modules) -> set:
    """Qualified names of ``modules`` inside ``model``."""
    ids = {id(m) for m in modules}
    return {n for n, m in model.named_modules() if id(m) in ids}


@pytest.mark.parametrize('name', NAMES)
def test_widths_and_pretrained_cfg_describe_the_model(name):
    """``num_features`` = channels of ``forward_features``' map, ``head_hidden_size`` = width of
    ``forward_head(pre_logits=True)``; ``first_conv`` is the first conv the input meets (with
    ``in_chans`` inputs), ``classifier`` the layers with ``num_classes`` outputs, all inside
    ``get_classifier()``; ``pool_size`` is the final map at ``input_size`` (stride measured here); and
    ``resolve_model_data_config`` hands the cfg's data fields on."""
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    convs = []
    hooks = [m.register_forward_pre_hook(lambda module, args, n=n: convs.append(n))
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, model.in_chans, SIZE, SIZE))
        pre = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
    for hook in hooks:
        hook.remove()
    assert feats.shape[1] == model.num_features == model.feature_info[-1]['num_chs']
    assert pre.shape == (1, model.head_hidden_size)
    assert logits.shape == (1, model.num_classes) and model.num_classes == cfg['num_classes']

    stride = SIZE // feats.shape[-1]
    assert tuple(cfg['pool_size']) == tuple(s // stride for s in cfg['input_size'][1:])
    assert cfg['first_conv'] == convs[0]
    assert model.get_submodule(cfg['first_conv']).in_channels == model.in_chans == cfg['input_size'][0]
    classifiers = (cfg['classifier'],) if isinstance(cfg['classifier'], str) else cfg['classifier']
    finals = {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == model.num_classes}
    assert set(classifiers) == finals
    assert finals <= _names(model, model.get_classifier().modules())

    data = resolve_model_data_config(model)
    assert data['input_size'] == cfg['input_size']
    assert len(data['mean']) == len(data['std']) == model.in_chans
    assert all(data[k] == cfg[k] for k in ('mean', 'std', 'crop_pct', 'interpolation'))


@pytest.mark.parametrize('name', NAMES)
def test_reset_classifier(name):
    """A new final layer for ``n`` classes in the model's mode (eval here: a head left in training mode
    would normalise one sample with its own statistics, or return the distillation pair), dtype and
    device; ``n = 0`` leaves ``forward`` = ``forward_head(pre_logits=True)``."""
    model = timm.create_model(name).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(7)
        assert model.num_classes == 7 and not any(m.training for m in model.get_classifier().modules())
        assert model(x).shape == (1, 7)
        model.reset_classifier(0)
        assert torch.equal(model(x), pre)
    model.double().reset_classifier(3)
    assert all(p.dtype == torch.float64 for p in model.get_classifier().parameters())


# Both forms of each structure (RepNeXt's distillation head fuses into one Linear, which a reset must
# rebuild as one); the reset_classifier cases add the training form of every other model
FORM_CASES = [(name, form) for name in STRUCTURES for form in ('train', 'fused')]
HEAD_CASES = FORM_CASES + [(name, 'train') for name in NAMES if name not in STRUCTURES]


@pytest.mark.parametrize('name,form', HEAD_CASES)
def test_global_pool_off_returns_the_unpooled_head_map(name, form):
    """timm's ``reset_classifier(0, '')`` (and ``create_model(num_classes=0, global_pool='')``): ``forward``
    returns a map ``[N, head_hidden_size, H, W]`` the size of ``forward_features``' map, where every pixel is
    what the pooled model's ``forward_head(pre_logits=True)`` makes of that pixel alone (the map itself
    where the head has no layer before the final one; the 1x1 head conv per pixel, as timm's GhostNet /
    MobileNetV3); ``reset_classifier(5, 'avg')`` brings pooling and 5 logits back."""
    model = _prepared(name, form)
    pooled = copy.deepcopy(model)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        feats = model.forward_features(x)
        n, c, h, w = feats.shape
        pixels = feats.permute(0, 2, 3, 1).reshape(n * h * w, c, 1, 1)
        expected = pooled.forward_head(pixels, pre_logits=True).reshape(n, h, w, -1).permute(0, 3, 1, 2)
        model.reset_classifier(0, '')
        assert model.global_pool.is_identity() and model.num_classes == 0
        out = model(x)
        assert out.shape == (n, model.head_hidden_size, h, w)
        assert_rel_close(expected, out, rtol=1e-6)
        if model.head_hidden_size == model.num_features:
            assert torch.equal(out, feats)
        model.reset_classifier(5, 'avg')
        assert model(x).shape == (1, 5) and not any(m.training for m in model.get_classifier().modules())
    with pytest.raises(ValueError, match='pooled width'):
        model.reset_classifier(5, 'catavgmax')
    if form == 'train':
        built = timm.create_model(name, num_classes=0, global_pool='').eval()
        with torch.no_grad():
            assert built(x).shape == out.shape


@pytest.mark.parametrize('name,form', FORM_CASES)
def test_prune_intermediate_layers_keeps_the_maps_taken(name, form):
    """timm's ``prune_intermediate_layers(indices)``: returns ``feature_take_indices``' indices; after it
    ``forward_intermediates`` gives the unpruned model's maps for them, every parameter left is used by a
    ``forward`` (the stages after the last index taken and the head are gone), which returns the last
    kept map; with ``prune_head=False`` and nothing to cut off, the model is left as it is."""
    model = _prepared(name, form)
    x = torch.randn(1, 3, SIZE, SIZE)
    count = len(model.feature_info)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        logits = model(x)
    unchanged = copy.deepcopy(model)
    assert unchanged.prune_intermediate_layers(count, prune_head=False) == list(range(count))
    with torch.no_grad():
        assert torch.equal(unchanged(x), logits)
    for indices in (1, [1, count - 2], [0]):
        pruned = copy.deepcopy(model)
        kept = pruned.prune_intermediate_layers(indices)
        assert kept == feature_take_indices(count, indices)[0]
        used = set()
        hooks = [m.register_forward_pre_hook(lambda module, args: used.add(id(module))) for m in pruned.modules()]
        with torch.no_grad():
            out = pruned(x)
            for hook in hooks:
                hook.remove()
            taken = pruned.forward_intermediates(x, indices=kept, intermediates_only=True)
        assert all(torch.equal(a, maps[i]) for a, i in zip(taken, kept, strict=True))
        assert torch.equal(out, maps[max(kept)])
        assert pruned.num_features == pruned.head_hidden_size == maps[max(kept)].shape[1]
        assert all(id(m) in used for m in pruned.modules() if next(m.parameters(recurse=False), None) is not None)


@pytest.mark.parametrize('name', NAMES)
def test_feature_info_matches_forward_intermediates(name):
    """``forward_intermediates`` returns one map per ``feature_info`` entry with its channels and its
    reduction (input size / map size), the last being ``forward_features``' map, which it also returns
    first when not taken; ``indices=n`` takes the last ``n``, ``stop_early`` ends the walk at the last
    one taken."""
    model = timm.create_model(name).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert [m.shape[1] for m in maps] == [info['num_chs'] for info in model.feature_info]
        assert [SIZE // m.shape[-1] for m in maps] == [info['reduction'] for info in model.feature_info]
        assert [SIZE // m.shape[-2] for m in maps] == [info['reduction'] for info in model.feature_info]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(last_two, maps[-2:], strict=True))
        final_again, first = model.forward_intermediates(x, indices=[0])
        assert torch.equal(final_again, final) and len(first) == 1 and torch.equal(first[0], maps[0])
        early, first = model.forward_intermediates(x, indices=[0], stop_early=True)
        assert torch.equal(early, maps[0]) and len(first) == 1


@pytest.mark.parametrize('name', STRUCTURES)
def test_feature_wrappers_return_the_same_maps(name):
    """timm's ``features_only=True`` wrappers (list, dict, hook, FX graph, ``forward_intermediates``
    getter), all ``feature_info`` entries: the same tensors as ``forward_intermediates`` of the
    classifier built from the same draws."""
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    everything = tuple(range(len(model.feature_info)))
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        for kind in ('list', 'dict', 'hook', 'fx', 'getter'):
            torch.manual_seed(0)
            features = timm.create_model(name, features_only=True, out_indices=everything, feature_cls=kind).eval()
            assert features.feature_info.channels() == [m.shape[1] for m in maps]
            out = features(x)
            out = list(out.values()) if isinstance(out, dict) else out
            assert len(out) == len(maps) and all(torch.equal(a, b) for a, b in zip(out, maps)), kind


def _prepared(name: str, form: str) -> nn.Module:
    """Eval-mode model with non-trivial BN state (fused biases and border terms not zero; RepMobile:
    measured statistics, random ones blow its deep plain stages up in float32), fused by timm's
    ``reparameterize_model`` for ``form='fused'``, converted by ``to_single_branch()`` for
    ``'single_branch'``."""
    model = timm.create_model(name)
    if name.startswith('repmobile'):
        calibrate_bn(model, torch.randn(2, 3, SIZE, SIZE))
    else:
        randomize_bn(model)
    model.eval()
    if form == 'single_branch':
        return model.to_single_branch()
    return reparameterize_model(model) if form == 'fused' else model


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:FutureWarning')
# torch.fx.GraphModule's own __init__ (timm's models get it too)
@pytest.mark.filterwarnings('ignore:The TorchScript type system doesn.t support instance-level annotations:UserWarning')
@pytest.mark.parametrize('name,form', FX_CASES)
def test_fx_traced_and_scripted_graphs_equal_eager(name, form):
    """timm's ``FeatureGraphNet`` (every ``feature_info`` map), and the whole model traced by plain
    ``torch.fx.symbolic_trace``, or where a module is one of timm's registered leaves (the fused RepMobile
    conv) by timm's ``create_feature_extractor`` up to the last node ``get_graph_node_names`` lists:
    traced, then scripted, they compute the eager model's maps and logits at an odd input size."""
    model = _prepared(name, form)
    x = torch.randn(1, 3, SIZE + 3, SIZE + 11)
    maps = FeatureGraphNet(model, tuple(range(len(model.feature_info))))
    if any(is_notrace_module(type(m)) for m in model.modules()):
        logits = create_feature_extractor(model, [get_graph_node_names(model)[1][-1]])
    else:
        logits = torch.fx.symbolic_trace(model)
    with torch.no_grad():   # eager first: a fused RepMobile conv then holds its per-size strip cache
        expected_maps, expected_logits = model.forward_intermediates(x, intermediates_only=True), model(x)
    scripted_maps, scripted_logits = torch.jit.script(maps), torch.jit.script(logits)
    with torch.no_grad():
        for what, graph, expected in (('maps', maps, expected_maps), ('scripted maps', scripted_maps, expected_maps),
                                      ('logits', logits, expected_logits),
                                      ('scripted logits', scripted_logits, expected_logits)):
            out = graph(x)
            assert_rel_close(expected, list(out.values()) if isinstance(out, dict) else out, rtol=1e-6, what=what)


@pytest.mark.parametrize('name', STRUCTURES)
def test_grad_checkpointing_recomputes_blocks_with_equal_gradients(name):
    """``set_grad_checkpointing()`` (the mm backbones' ``with_cp``): the first conv of the first feature
    stage runs again in backward, and the loss and every gradient equal those without it (training
    mode, batch 2)."""
    model = timm.create_model(name)
    x = torch.randn(2, 3, SIZE, SIZE)
    calls = []
    stage = model.get_submodule(model.feature_info[0]['module'])
    next(m for m in stage.modules() if isinstance(m, nn.Conv2d)).register_forward_hook(lambda *args: calls.append(1))

    def loss_and_grads():
        model.zero_grad()
        calls.clear()
        torch.manual_seed(0)                        # the same dropout draws
        loss = model(x).square().mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()], len(calls)

    loss, grads, runs = loss_and_grads()
    assert not model.grad_checkpointing and runs == 1
    model.set_grad_checkpointing()
    assert model.grad_checkpointing
    loss_cp, grads_cp, runs_cp = loss_and_grads()
    assert runs_cp == 2
    assert torch.equal(loss, loss_cp)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(grads, grads_cp))


@pytest.mark.parametrize('name', STRUCTURES)
def test_group_matcher_orders_parameters_by_depth(name):
    """timm's ``group_parameters`` with ``group_matcher(coarse)`` (layer-wise learning-rate decay):
    every parameter in a group, group ids non-decreasing in the order a forward uses the parameters'
    modules, the stem alone in the first group, the final layer in the last, fine groups finer."""
    model = timm.create_model(name).eval()
    first_use = {}

    def used(name):
        def hook(module, args):
            first_use.setdefault(name, len(first_use))
        return hook

    hooks = [m.register_forward_pre_hook(used(n))
             for n, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]
    with torch.no_grad():
        model(torch.randn(1, 3, SIZE, SIZE))
    for hook in hooks:
        hook.remove()
    names = [n for n, _ in model.named_parameters()]
    by_use = sorted(names, key=lambda n: first_use[n.rpartition('.')[0]])
    stem = {f'{m}.{p}' for m in _names(model, model.feature_stages()[0])
            for p, _ in model.get_submodule(m).named_parameters()}
    head = {f'{m}.{p}' for m in _names(model, [model.get_classifier()])
            for p, _ in model.get_submodule(m).named_parameters()}
    counts = []
    for coarse in (True, False):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        group_of = {n: g for g, members in groups.items() for n in members}
        assert sorted(group_of) == sorted(names)
        ids = [group_of[n] for n in by_use]
        assert ids == sorted(ids)
        assert set(groups[min(groups)]) == stem and head <= set(groups[max(groups)])
        counts.append(len(groups))
    assert counts[0] < counts[1]


@pytest.mark.parametrize('name,keys', [('repnext_m0', 'repnext_m0.keys.txt'),
                                       ('repghostnetv2_s', 'repghostnetv2_small.keys.txt'),
                                       ('repmobile_s', 'repmobile_S.keys.txt')])
def test_pretrained_into_other_in_chans_and_num_classes(tmp_path, name, keys):
    """timm's loader uses the cfg's names (timm's own pretrained test: ``in_chans=1, num_classes=5``):
    the ``first_conv`` weight is adapted with ``adapt_input_conv``, the ``classifier`` layers are new,
    every other tensor is the official file's (converted by the package's loader)."""
    official = synthetic_state_dict(keys_file(keys))
    path = tmp_path / 'official.pth'
    torch.save({'model': official}, path)
    model = timm.create_model(name, pretrained=True, in_chans=1, num_classes=5,
                              pretrained_cfg_overlay=dict(file=str(path)))
    cls, arch, cfg = MODELS[name]
    reference = cls(arch=arch)
    reference.load_backbone_state_dict(official)
    expected = reference.state_dict()
    classifiers = (cfg['classifier'],) if isinstance(cfg['classifier'], str) else cfg['classifier']
    new = {f'{c}.{p}' for c in classifiers for p in ('weight', 'bias')}
    stem = f"{cfg['first_conv']}.weight"
    state = model.state_dict()
    assert model.in_chans == 1 and state.keys() == expected.keys()
    assert torch.equal(state[stem], adapt_input_conv(1, expected[stem]))
    assert all(state[k].shape[0] == 5 for k in new)
    assert all(torch.equal(v, expected[k]) for k, v in state.items() if k not in new | {stem})
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, SIZE, SIZE)).shape == (1, 5)
