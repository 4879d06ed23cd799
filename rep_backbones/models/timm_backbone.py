"""Any timm CNN with ``feature_info`` as a fusable multi-scale backbone: the comparators of the papers
(MobileOne, RepViT, FastViT, RepVGG, GhostNetV2, MobileNetV2/V3, EfficientNet, ...).

The timm model is built with ``pretrained=False`` (no network; weights come through ``init_cfg``)
and cut into its *trunk*: the top-level modules that ``forward_features`` runs one after the other,
with the containers that timm's ``feature_info`` indexes into (``stages``, ``blocks``) split into
their children. One probe forward (eval mode, 1 x C x 128 x 128) with hooks proves that the trunk is
a plain chain (each unit reads exactly the previous unit's output) and measures every unit's stride
and channels. The returned maps are the output of the **deepest** unit at strides 4/8/16/32, as the
package's own backbones do. timm's ``features_only`` differs where it takes the first unit at a
stride (GhostNet/GhostNetV2/RepGhostNet: ``blocks.5`` at stride 16, ``blocks.7`` at 32, where the
deepest are ``blocks.6``/``blocks.8``) or where its last feature is the final pointwise expansion
conv (MobileNetV3/V4 ``blocks.-1``, GhostNet ``blocks.9``): that conv is feature 4 here, built only
when ``out_indices`` asks for it. Units after the last requested feature (and timm's head) are not
kept, so every parameter gets a gradient (DDP needs no ``find_unused_parameters``).

Fusion (:meth:`TimmRepBackbone._reparameterize`): timm's own ``fuse`` / ``reparameterize`` /
``switch_to_deploy`` methods (``timm.utils.model.reparameterize_model``: MobileOne, RepVGG, FastViT,
RepViT, RepGhost, GhostNetV3 blocks), then every remaining conv + BatchNorm pair is folded into the
conv in place (the conv keeps its class, so timm's TF-"same" padding and mixed kernels stay right),
and a timm ``BatchNormAct2d``/``SyncBatchNormAct`` leaves its dropout + activation behind. Pairs are
found structurally, never by module order: adjacent children of an ``nn.Sequential``, adjacent trunk
units (a conv, or a plain ``nn.Sequential`` ending in one, then a BN), and the attribute pairs of the
timm blocks in :func:`known_block_pairs` (each read off the block's ``forward``); the probe forward
checks that every such BN reads exactly its conv's output. A BN that only feeds a linear layer
(FastViT-SA/MA's norm before attention, :func:`known_pre_norms`) is folded into that layer's input side
(exact: no padding). Any BatchNorm left after that is an error naming it (e.g. MobileNetV4-hybrid's
attention norm, whose output feeds a query conv and zero-padded strided key/value convs: exact only
with a border correction per consumer, not done here).
"""
from __future__ import annotations

import difflib
import functools
from typing import Dict, List, Optional, Sequence, Tuple

import timm
import torch
from timm.layers import BatchNormAct2d, Conv2dSame, ConvNormAct, MixedConv2d, SyncBatchNormAct
from timm.layers.conv2d_same import Conv2dSameExport
from timm.utils.model import reparameterize_model
from torch import Tensor, nn

from ..reparam import (
    bn_scale_shift,
    conv_bn_pairs,
    fold_affine_into,
    fold_conv_bn,
    fold_preceding_affine,
    is_norm,
    is_plain_sequential,
    norm_remainder,
)
from .base import RepBackbone
from .registry import register_backbone

STRIDES = (4, 8, 16, 32)
PROBE_SIZE = 128
# Convs whose output a following BN can be folded into by rescaling ``weight``/``bias`` in place.
FOLDABLE_CONVS = (nn.Conv2d, Conv2dSame, Conv2dSameExport)


@functools.lru_cache(maxsize=None)
def known_block_pairs() -> Dict[type, Tuple[Tuple[str, str], ...]]:
    """``block class -> ((conv attr, bn attr), ...)``: in each block's ``forward`` the BN is applied
    to the conv's output and to nothing else (timm 1.0.x; the probe forward re-checks it)."""
    from timm.models import _efficientnet_blocks as eb
    from timm.models import ghostnet, repghost, resnet
    return {
        ConvNormAct: (('conv', 'bn'),),
        eb.ConvBnAct: (('conv', 'bn1'),),
        eb.DepthwiseSeparableConv: (('conv_dw', 'bn1'), ('conv_pw', 'bn2')),
        eb.InvertedResidual: (('conv_pw', 'bn1'), ('conv_dw', 'bn2'), ('conv_pwl', 'bn3')),
        eb.EdgeResidual: (('conv_exp', 'bn1'), ('conv_pwl', 'bn2')),
        ghostnet.GhostBottleneck: (('conv_dw', 'bn_dw'),),
        repghost.RepGhostBottleneck: (('conv_dw', 'bn_dw'),),
        resnet.BasicBlock: (('conv1', 'bn1'), ('conv2', 'bn2')),
        resnet.Bottleneck: (('conv1', 'bn1'), ('conv2', 'bn2'), ('conv3', 'bn3')),
    }


@functools.lru_cache(maxsize=None)
def known_pre_norms() -> Dict[type, Tuple[Tuple[str, str], ...]]:
    """``block class -> ((bn attr, linear attr), ...)``: a BatchNorm whose output only feeds a
    ``nn.Linear`` over the flattened tokens (FastViT-SA/MA's ``AttentionBlock``: ``norm`` ->
    ``Attention``: ``x.flatten(2).transpose(-2, -1)`` -> ``qkv``). A linear map has no padding, so
    folding the BN's affine into its input side is exact (the probe forward re-checks the flow)."""
    from timm.models import fastvit
    return {fastvit.AttentionBlock: (('norm', 'token_mixer.qkv'),)}


@torch.no_grad()
def fold_norm_into_next_linear(bn: nn.Module, linear: nn.Linear) -> None:
    """In place: ``linear`` becomes ``linear(bn(x))`` (eval mode, BN over the features ``linear``
    reads): ``W' = W * scale`` per input feature, ``b' = b + W @ shift``."""
    scale, shift = bn_scale_shift(bn)
    kernel, bias = fold_preceding_affine(linear.weight[..., None, None], linear.bias, scale, shift)
    linear.weight = nn.Parameter(kernel[..., 0, 0].detach().clone())
    linear.bias = nn.Parameter(bias.detach().clone())


def _is_conv(module: nn.Module) -> bool:
    """A conv :func:`fold_norm_into_conv` can fold a following BatchNorm into."""
    return type(module) in FOLDABLE_CONVS or type(module) is MixedConv2d


@torch.no_grad()
def fold_norm_into_conv(conv: nn.Module, bn: nn.Module) -> None:
    """In place: ``conv`` becomes ``bn(conv(x))`` (eval mode) by rescaling its weight and bias; its
    class (TF-"same" padding) stays. ``MixedConv2d`` (timm's split-kernel conv, whose output is the
    concatenation of its sub-convs') is folded slice by slice."""
    scale, shift = bn_scale_shift(bn)
    start = 0
    for sub in (list(conv.values()) if type(conv) is MixedConv2d else [conv]):
        if type(sub) not in FOLDABLE_CONVS:
            raise TypeError(f'cannot fold a BatchNorm into {type(sub).__name__}')
        part = slice(start, start + sub.out_channels)
        fold_affine_into(sub, scale[part], shift[part])
        start = part.stop
    if start != bn.num_features:
        raise ValueError(f'conv has {start} output channels, BatchNorm {bn.num_features}')


def _dropped_activation(module: nn.Module) -> bool:
    """A BatchNorm carrying an ``act`` it does not run: what torch's / mmengine's SyncBN conversions
    and mmengine's ``revert_sync_batchnorm`` make of timm's ``BatchNormAct2d`` / ``SyncBatchNormAct``
    (a plain BN that keeps the old children without calling them)."""
    return (is_norm(module) and not isinstance(module, (BatchNormAct2d, SyncBatchNormAct))
            and isinstance(getattr(module, 'act', None), nn.Module))


def restore_norm_act(module: nn.Module) -> nn.Module:
    """timm's norm+act layer (SyncBN or not, as ``module`` is) holding ``module``'s parameters,
    statistics, dropout and activation: undoes what :func:`_dropped_activation` detects."""
    drop = getattr(module, 'drop', None)
    return _rebuilt_norm(SyncBatchNormAct if isinstance(module, nn.SyncBatchNorm) else BatchNormAct2d, module,
                         drop=nn.Identity() if drop is None else drop, act=module.act)


def unsynced_norm(module: nn.SyncBatchNorm) -> nn.BatchNorm2d:
    """The plain twin of a SyncBN layer (timm's ``SyncBatchNormAct`` -> ``BatchNormAct2d`` with its
    dropout and activation), sharing its parameters and statistics. In eval mode the two compute the
    same; timm's block fusers need it because they ``assert isinstance(bn, nn.BatchNorm2d)``, which
    ``SyncBatchNorm`` is not."""
    if isinstance(module, SyncBatchNormAct):
        return _rebuilt_norm(BatchNormAct2d, module, drop=module.drop, act=module.act)
    return _rebuilt_norm(nn.BatchNorm2d, module)


def _rebuilt_norm(cls: type, module: nn.Module, drop: Optional[nn.Module] = None,
                  act: Optional[nn.Module] = None) -> nn.Module:
    """A ``cls`` BatchNorm sharing ``module``'s parameters and statistics (and timm's norm+act
    ``drop`` / ``act`` children when given), in ``module``'s train/eval mode."""
    new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
    new.weight, new.bias = module.weight, module.bias
    new.running_mean, new.running_var = module.running_mean, module.running_var
    new.num_batches_tracked = module.num_batches_tracked
    if act is not None:
        new.drop, new.act = drop, act
    return new.train(module.training)


@register_backbone
class TimmRepBackbone(RepBackbone):
    """A timm model as a 4-scale backbone that ``rep_backbones.fuse`` turns into BN-free convs.

    Args:
        model_name: any timm model name with ``feature_info`` covering strides 4/8/16/32
            (``timm.list_models()``); ``arch`` is accepted as an alias (``NAME:ARCH`` tool specs).
        out_indices: 0..3 = deepest unit at strides 4/8/16/32; 4 = the final pointwise expansion
            conv where the model has one after its last stage (MobileNetV3/V4, GhostNet).
        frozen_stages: -1 none; 0 the stem (units before timm's first stride-4 feature); ``n`` the
            stem and stages 0..n-1 (stage ``i`` ends at feature ``i``).
        norm_eval, deploy, with_cp, init_cfg: as for every backbone (:class:`RepBackbone`);
            ``init_cfg=dict(type='Pretrained', checkpoint=...)`` reads timm checkpoint files
            (``.safetensors`` / ``.bin`` / ``.pth``, timm key names; the classifier is ignored).
        norm_cfg: ``dict(type='BN'|'SyncBN', eps=.., momentum=..)``; SyncBN goes through timm's
            converter, which keeps the activations of timm's norm+act layers (torch's and
            mmengine's converters drop them: :meth:`train` puts them back).
        in_channels: input channels (timm's ``in_chans``).
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate=0.1``).
    """
    # Models whose fusion is tested (tests/test_timm_backbone.py); any timm CNN may be tried.
    arch_settings = {name: name for name in (
        'mobileone_s0', 'mobileone_s1', 'repvit_m0_9', 'repvit_m1_1', 'fastvit_t8', 'repvgg_a0',
        'ghostnetv2_100', 'mobilenetv3_large_100', 'efficientnet_b0', 'mobilenetv2_100')}
    # Any timm net: the memory format is not measured for each, so fused weights stay as they are.
    deploy_memory_format = torch.contiguous_format
    foreign_conv_bn_pairs = known_block_pairs()

    def __init__(self, model_name: Optional[str] = None, out_indices: Optional[Sequence[int]] = None,
                 frozen_stages: int = -1, norm_eval: bool = False, deploy: bool = False,
                 norm_cfg: Optional[dict] = None, init_cfg: Optional[dict] = None, with_cp: bool = False,
                 in_channels: int = 3, arch: Optional[str] = None, **timm_kwargs):
        super().__init__(out_indices, frozen_stages, norm_eval, deploy, init_cfg, with_cp)
        self.model_name = self.arch = self._resolve_name(model_name, arch)
        if 'pretrained' in timm_kwargs or 'features_only' in timm_kwargs:
            raise ValueError(f'{type(self).__name__}: pass weights through init_cfg=dict(type="Pretrained", '
                             'checkpoint=...), not timm\'s pretrained/features_only (no network here)')
        model = timm.create_model(self.model_name, pretrained=False, in_chans=in_channels, **timm_kwargs)
        trunk = _Trunk(model, self.model_name, in_channels)
        self.feature_info = trunk.feature_info
        n = len(self.feature_info)
        valid = [i % n for i in self.out_indices if isinstance(i, int) and -n <= i < n]
        last_unit = trunk.feature_units[max(valid, default=n - 1)]
        self._units = [name for name, _ in trunk.units[:last_unit + 1]]
        for root, module in trunk.kept_roots(last_unit):
            if hasattr(self, root):
                raise ValueError(f'{type(self).__name__}: timm module name {root!r} clashes with an attribute')
            setattr(self, root, module)
        bounds = [trunk.stem_end] + [u + 1 for u in trunk.feature_units]
        self._stage_units = [self._units[:trunk.stem_end]] + [
            self._units[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        self._unit_pairs = [(a, b) for a, b in trunk.unit_pairs if b in self._units]
        self._has_norms = any(is_norm(m) for m in self.modules())
        if norm_cfg is not None:
            self._apply_norm_cfg(norm_cfg)
        self._finish_init()

    @classmethod
    def _resolve_name(cls, model_name: Optional[str], arch: Optional[str]) -> str:
        if model_name and arch and model_name != arch:
            raise ValueError(f'{cls.__name__}: model_name={model_name!r} and arch={arch!r} differ; give one')
        name = model_name or arch
        if not isinstance(name, str) or not name:
            raise ValueError(f'{cls.__name__} needs model_name= (a timm model name, e.g. "mobileone_s1"); '
                             f'tested: {", ".join(cls.arch_settings)}')
        name = name.strip()
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=5)
            raise ValueError(f'{cls.__name__}: {name!r} is not a timm model'
                             + (f'; did you mean {", ".join(close)}?' if close else ''))
        return name

    def _apply_norm_cfg(self, norm_cfg: dict) -> None:
        cfg = dict(norm_cfg)
        kind = cfg.pop('type', 'BN')
        cfg.pop('requires_grad', None)
        if kind not in ('BN', 'BN2d', 'SyncBN'):
            raise ValueError(f"{type(self).__name__}: norm_cfg type must be 'BN' or 'SyncBN', got {kind!r}")
        for module in self.modules():
            if is_norm(module):
                for attr in ('eps', 'momentum'):
                    if attr in cfg:
                        setattr(module, attr, cfg[attr])
        if kind == 'SyncBN':
            for name, child in list(self.named_children()):
                setattr(self, name, timm.layers.convert_sync_batchnorm(child))

    # -- structure -------------------------------------------------------------------------------
    def feature_stages(self) -> List[List[nn.Module]]:
        return [[self.get_submodule(name) for name in names] for names in self._stage_units]

    def conv_bn_pairs(self) -> List[Tuple[str, str]]:
        """Adjacent trunk units (``conv_stem``/``bn1``); the known timm blocks' pairs are
        ``foreign_conv_bn_pairs``."""
        return list(self._unit_pairs)

    def is_head_key(self, key: str) -> bool:
        """Keys outside the kept trunk units (timm's head, units after the last used feature)."""
        return not any(key.startswith(f'{unit}.') for unit in self._units)

    def state_dict_form(self, state_dict) -> str:
        """``'train'`` when the trunk's keys hold BatchNorm statistics (the fused form has none)."""
        if not self._has_norms:
            return 'deploy' if self.deploy else 'train'
        stats = any(k.endswith('.running_var') for k in state_dict if not self.is_head_key(k))
        return 'train' if stats else 'deploy'

    def train(self, mode: bool = True):
        """Also puts back timm's norm+act layers where a SyncBN conversion or revert from outside
        (``revert_sync_batchnorm`` on CPU, mmengine's ``sync_bn``) left BNs that skip their
        activation; the runner and the tools call ``train()`` / ``eval()`` before running."""
        for name, module in list(self.named_modules()):
            if _dropped_activation(module):
                self.set_submodule(name, restore_norm_act(module))
        return super().train(mode)

    # -- fusion ----------------------------------------------------------------------------------
    def _reparameterize(self) -> None:
        """timm's own re-parameterizations, then every conv + BN pair folded (see module doc).
        SyncBN layers (``norm_cfg=dict(type='SyncBN')``, as DDP trains and tests them) are made
        plain BN first: timm's block fusers accept only ``nn.BatchNorm2d``."""
        for name, module in list(self.named_modules()):
            if isinstance(module, nn.SyncBatchNorm):
                self.set_submodule(name, unsynced_norm(module))
        reparameterize_model(self, inplace=True)
        for module in self.modules():
            # FastViT's RepMixer, ReparamLargeKernelConv and RepConditionalPosEnc fuse again (and fail)
            # when called twice, as timm's reparameterize_model over a model holding this backbone does
            if getattr(module, 'reparam_conv', None) is not None and hasattr(module, 'reparameterize'):
                module.reparameterize = _already_fused
        for parent_name, parent in list(self.named_modules()):
            for conv_name, bn_name in conv_bn_pairs(parent, self.foreign_conv_bn_pairs, can_fold=_is_conv):
                conv = parent.get_submodule(conv_name)
                if is_norm(parent.get_submodule(bn_name)) and not _is_conv(conv):
                    raise TypeError(f'{type(self).__name__}({self.model_name}): cannot fold '
                                    f'{_join(parent_name, bn_name)} into {type(conv).__name__} '
                                    f'{_join(parent_name, conv_name)}')
                fold_conv_bn(parent, conv_name, bn_name, fold=fold_norm_into_conv)
            for bn_name, linear_name in known_pre_norms().get(type(parent), ()):
                bn = parent.get_submodule(bn_name)
                if is_norm(bn):
                    fold_norm_into_next_linear(bn, parent.get_submodule(linear_name))
                    parent.set_submodule(bn_name, norm_remainder(bn))
        left = [f'{name} ({type(m).__name__})' for name, m in self.named_modules() if is_norm(m)]
        if left:
            raise NotImplementedError(
                f'{type(self).__name__}({self.model_name}): {len(left)} BatchNorm layer(s) neither follow a conv '
                f'nor feed a linear layer of a known block, so no exact fold is known here: {", ".join(left[:5])}')


def _already_fused() -> None:
    """``reparameterize()`` of a timm module that is fused already (see ``_reparameterize``)."""


def _join(parent: str, child: str) -> str:
    return f'{parent}.{child}' if parent else child


class _Trunk:
    """The chain of modules a timm model's ``forward_features`` runs, with strides and channels.

    ``units``: ``[(dotted name, module)]`` in execution order; ``feature_units``: unit index of each
    feature (4 strides, plus the final pointwise conv when there is one); ``stem_end``: units before
    timm's first stride-4 feature; ``unit_pairs``: adjacent (conv, BN) units.
    """

    def __init__(self, model: nn.Module, name: str, in_channels: int):
        self.model, self.name = model, name
        info = getattr(model, 'feature_info', None)
        if not info:
            raise ValueError(f'TimmRepBackbone: timm model {name!r} has no feature_info, so its feature '
                             'maps cannot be located; pick a CNN that supports features_only')
        info = [dict(f) for f in (info.get_dicts() if hasattr(info, 'get_dicts') else info)]
        strides = sorted({f['reduction'] for f in info})
        if not set(STRIDES) <= set(strides):
            raise ValueError(f'TimmRepBackbone: timm model {name!r} has feature maps at strides {strides}; a '
                             f'detection backbone needs all of {list(STRIDES)} (at least four strides)')
        self.info = info
        self.units = self._candidate_units()
        meta = self._probe(in_channels)
        self._locate_features(meta)

    def _candidate_units(self) -> List[Tuple[str, nn.Module]]:
        feature_modules = [f['module'] for f in self.info]
        children = list(self.model.named_children())
        names = [n for n, _ in children]
        last_root = feature_modules[-1].split('.')[0]
        if last_root not in names:
            raise ValueError(f'TimmRepBackbone: {self.name}: feature module {feature_modules[-1]!r} is not '
                             'under a direct child of the model')
        units = []
        for root, child in children[:names.index(last_root) + 1]:
            split = isinstance(child, (nn.Sequential, nn.ModuleList)) and any(
                m.startswith(f'{root}.') for m in feature_modules)
            units += [(f'{root}.{k}', c) for k, c in child.named_children()] if split else [(root, child)]
        return [(n, m) for n, m in units if not isinstance(m, nn.Identity)]

    @torch.no_grad()
    def _probe(self, in_channels: int) -> List[Tuple[int, int]]:
        """One eval forward with hooks: checks the chain and the known pairs, returns (stride, chs)
        per unit."""
        calls: Dict[int, list] = {}
        watched = {id(m) for _, m in self.units}
        pairs = [(parent.get_submodule(c), parent.get_submodule(b), f'{pname}.{b}')
                 for uname, unit in self.units for pname, parent in _named(unit, uname)
                 for c, b in known_block_pairs().get(type(parent), ())
                 if getattr(parent, c, None) is not None and is_norm(getattr(parent, b, None))]
        pre = [(parent.get_submodule(b), parent.get_submodule(lin), f'{pname}.{b}')
               for uname, unit in self.units for pname, parent in _named(unit, uname)
               for b, lin in known_pre_norms().get(type(parent), ()) if is_norm(getattr(parent, b, None))]
        for first, second, _ in pairs + pre:
            watched.update((id(first), id(second)))
        hooks = [m.register_forward_hook(lambda mod, args, out: calls.setdefault(id(mod), []).append((args[0], out)))
                 for m in {id(m): m for m in self.model.modules() if id(m) in watched}.values()]
        x = torch.randn(1, in_channels, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0))
        was_training = self.model.training
        self.model.eval()
        try:
            (self.model.forward_features if hasattr(self.model, 'forward_features') else self.model)(x)
        except Exception as err:  # noqa: BLE001  (any model failure: say which probe failed)
            raise ValueError(f'TimmRepBackbone: probing {self.name} with a {tuple(x.shape)} input failed: '
                             f'{err}') from err
        finally:
            for h in hooks:
                h.remove()
            self.model.train(was_training)

        for conv, bn, bn_name in pairs:
            c_calls, b_calls = calls.get(id(conv), []), calls.get(id(bn), [])
            if len(c_calls) != len(b_calls) or any(b[0] is not c[1] for c, b in zip(c_calls, b_calls)):
                raise ValueError(f'TimmRepBackbone: {self.name}: {bn_name} does not read exactly its conv\'s '
                                 'output in this timm version; its fold would not be exact')
        for bn, linear, bn_name in pre:
            b_calls, l_calls = calls.get(id(bn), []), calls.get(id(linear), [])
            if len(b_calls) != len(l_calls) or any(not torch.equal(b[1].flatten(2).transpose(-2, -1), lin[0])
                                                   for b, lin in zip(b_calls, l_calls)):
                raise ValueError(f'TimmRepBackbone: {self.name}: {bn_name} does not feed exactly its linear '
                                 'layer in this timm version; its fold would not be exact')
        meta, prev, prev_name, kept = [], x, 'the input', []
        for uname, unit in self.units:
            unit_calls = calls.get(id(unit), [])
            if not unit_calls and not any(True for _ in unit.parameters()):
                continue                                      # parameter-free and unused
            if len(unit_calls) != 1 or unit_calls[0][0] is not prev:
                raise ValueError(f'TimmRepBackbone: {self.name}: {uname} does not take the output of {prev_name} '
                                 f'(called {len(unit_calls)} times): forward_features is not a plain chain of its '
                                 'modules there, so its features cannot be tapped')
            prev, prev_name = unit_calls[0][1], uname
            if not isinstance(prev, Tensor) or prev.dim() != 4:
                raise ValueError(f'TimmRepBackbone: {self.name}: {uname} does not return an N x C x H x W map')
            h, w = prev.shape[-2:]
            if PROBE_SIZE % h or PROBE_SIZE % w or h != w:
                raise ValueError(f'TimmRepBackbone: {self.name}: {uname} maps {PROBE_SIZE}x{PROBE_SIZE} to {h}x{w}')
            meta.append((PROBE_SIZE // h, prev.shape[1]))
            kept.append((uname, unit))
        self.units = kept
        self.unit_pairs = [(_output_conv(a, ma), b) for (a, ma), (b, mb) in zip(kept[:-1], kept[1:])
                           if _output_conv(a, ma) and is_norm(mb)]
        return meta

    def _locate_features(self, meta: List[Tuple[int, int]]) -> None:
        deepest = {stride: i for i, (stride, _) in enumerate(meta)}
        missing = [s for s in STRIDES if s not in deepest]
        if missing:
            raise ValueError(f'TimmRepBackbone: {self.name}: no trunk unit at strides {missing}')
        last = len(meta) - 1
        head = None
        if last > 0 and meta[last][0] == meta[last - 1][0] == 32 and _is_pointwise(self.units[last][1]):
            head, deepest[32] = last, last - 1
        self.feature_units = [deepest[s] for s in STRIDES] + ([head] if head is not None else [])
        self.feature_info = [dict(num_chs=meta[u][1], reduction=meta[u][0], module=self.units[u][0])
                             for u in self.feature_units]
        first4 = next(f['module'] for f in self.info if f['reduction'] >= 4)
        self.stem_end = next((i for i, (n, _) in enumerate(self.units)
                              if n == first4 or first4.startswith(f'{n}.') or n.startswith(f'{first4}.')),
                             next(i for i, (s, _) in enumerate(meta) if s >= 4))
        self.stem_end = min(self.stem_end, self.feature_units[0])

    def kept_roots(self, last_unit: int) -> List[Tuple[str, nn.Module]]:
        """Top-level modules holding units ``0..last_unit``; split containers lose their later children."""
        keep = [n for n, _ in self.units[:last_unit + 1]]
        roots = []
        for root in dict.fromkeys(n.split('.')[0] for n in keep):
            module = getattr(self.model, root)
            if any(n.startswith(f'{root}.') for n in keep):
                idx = [k for k, _ in module.named_children()]
                last = max(idx.index(n.split('.', 1)[1]) for n in keep if n.startswith(f'{root}.'))
                for _ in range(len(idx) - last - 1):
                    del module[len(module) - 1]
            roots.append((root, module))
        return roots


def _named(module: nn.Module, prefix: str):
    return ((_join(prefix, n), m) for n, m in module.named_modules())


def _output_conv(name: str, unit: nn.Module) -> Optional[str]:
    """Name of the conv whose output is ``unit``'s output: the unit itself, or the last child of a
    plain ``nn.Sequential`` (ResNet-D's deep stem ``conv1``); ``None`` otherwise."""
    if _is_conv(unit):
        return name
    if is_plain_sequential(unit) and len(unit):
        key, last = list(unit.named_children())[-1]
        return _output_conv(f'{name}.{key}', last)
    return None


def _is_pointwise(unit: nn.Module) -> bool:
    """A unit holding exactly one conv, 1x1 / stride 1 / dense: a final channel-expansion conv."""
    convs = [m for m in unit.modules() if isinstance(m, nn.Conv2d)]
    return (len(convs) == 1 and convs[0].kernel_size == (1, 1) and convs[0].stride == (1, 1)
            and convs[0].groups == 1)
