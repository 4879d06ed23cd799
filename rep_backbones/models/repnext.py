"""RepNeXt (Zhao et al., 2024) M0-M5 and the single-branch "E" forms M0E/M1E/M2E, as multi-scale
backbones and as the ImageNet classifier with distillation head.

Module and key names equal the official release (``stem.stem.{0,2}``, ``stages.{i}.downsample``,
``stages.{i}.blocks.{j}.token_mixer.conv_s/conv_m/conv_l``, ``norm``, ``channel_mixer.{0,2}``,
``head.head`` / ``head.head_dist``), so the official ``repnext_m*_distill_300e.pth`` files load as they are.
The token mixers are in ``repnext_mixers.py``.

Two fusion levels (both exact in eval mode, no BatchNorm left):

* **level 1** (``fusion_level=1``, the default of ``switch_to_deploy()``): each RepDWConvS -> one DW 3x3,
  RepDWConvM -> one DW 7x7, ConvNorm -> biased conv, and the ``norm`` BatchNorm after each token mixer
  folded away: in a block *forward* into the channel mixer's first 1x1 conv (identity chunk passed
  through, as the official layout has it: the faster graph) or, with ``block_norm_fold='backward'``,
  into the token mixer (identity chunk -> DW 1x1 ``conv_i``); in a downsample always backward. The
  1x11 -> 11x1 pair ``conv_l`` stays serial (121 instead of 22 weights per channel otherwise).
* **level 2** (``fusion_level=2``, or ``to_single_branch()`` at any level): one DW 11x11 per block, one
  DW 7x7 with channel multiplier 2 per downsample (the paper's "channel-wise SRP").

The E variants are trained with that single-branch structure (token mixer = biased DW 11x11,
downsample = biased DW 7x7 multiplier 2, interleaved; no border term, no reorder).
"""
from __future__ import annotations

import re
import warnings
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from .. import checkpoint as ckpt
from ..reparam import bn_scale_shift, conv_bn_branch, fold_preceding_affine, is_norm, make_conv
from .base import NoOfficialForm, RepBackbone, apply_norm_cfg, arch_aliases
from .layers import BN_EPS, ClassifierForm, figures_table
from .registry import register_backbone, register_classifier
from .repnext_mixers import (  # noqa: F401
    ChunkConv,
    CopyConv,
    CopyConvSingle,
    RepDWConvM,
    RepDWConvS,
    SingleBranchDWConv,
    fold_affine_into_single_branch,
)


class RepNeXtArch(NamedTuple):
    embed_dim: Tuple[int, int, int, int]
    depth: Tuple[int, int, int, int]
    trained_single_branch: bool = False   # E forms: the single-branch structure is the trained one


ARCHS: Dict[str, RepNeXtArch] = {
    'M0': RepNeXtArch((40, 80, 160, 320), (2, 2, 9, 1)),
    'M1': RepNeXtArch((48, 96, 192, 384), (3, 3, 15, 2)),
    'M2': RepNeXtArch((56, 112, 224, 448), (3, 3, 15, 2)),
    'M3': RepNeXtArch((64, 128, 256, 512), (3, 3, 13, 2)),
    'M4': RepNeXtArch((64, 128, 256, 512), (5, 5, 25, 4)),
    'M5': RepNeXtArch((80, 160, 320, 640), (7, 7, 35, 2)),
    'M0E': RepNeXtArch((40, 80, 160, 320), (2, 2, 9, 1), True),
    'M1E': RepNeXtArch((48, 96, 192, 384), (3, 3, 15, 2), True),
    'M2E': RepNeXtArch((56, 112, 224, 448), (3, 3, 15, 2), True),
}
MLP_RATIO = 2
RELEASE_URL = 'https://github.com/suous/RepNeXt/releases/download/v1.0'
FUSION_LEVELS = (1, 2)


# 'repnext_m3' (also timm-style model names), 'repnext-m3', 'repnextm3'.
ALIASES = arch_aliases(ARCHS, prefixes=('repnext_', 'repnext-', 'repnext'))

# RepNeXt's published ImageNet classifier figures, beside our counts in rep_backbones.complexity.
PAPER_TABLE = dict(
    source='suous/RepNeXt README.md + exact counts of the official model/repnext.py',
    note='train params include the two distillation heads (head + head_dist); fused = one Linear head; '
         'MACs of the fused model', classifier_kwargs=dict(distillation=True), readme_params_form='fused',
    variants=figures_table("""
        variant  train_params  fused_params  macs    readme_params  readme_macs
        M0       2,716,480     2,333,200     0.388G  2.3M           0.4G
        M1       5,323,316     4,829,560     0.822G  4.8M           0.8G
        M2       7,049,082     6,473,200     1.111G  6.5M           1.1G
        M3       8,466,560     7,818,920     1.339G  7.8M           1.3G
        M4       14,080,480    13,342,120    2.289G  13.3M          2.3G
        M5       22,708,860    21,737,560    4.544G  21.7M          4.5G
    """))


# -- building blocks (training form) -------------------------------------------------------------------
class ConvNorm(nn.Module):
    """Conv (no bias) -> BatchNorm, official keys ``conv`` / ``norm``; ``fuse()`` returns the biased conv."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, bias=False)
        self.norm = nn.BatchNorm2d(out_chs, eps=BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        return make_conv(self.conv, *conv_bn_branch(self.conv, self.norm))


def mlp(channels: int, hidden: int) -> nn.Sequential:
    """The channel mixer: 1x1 ConvNorm (C -> hidden) -> GELU -> 1x1 ConvNorm (-> C)."""
    return nn.Sequential(ConvNorm(channels, hidden), nn.GELU(), ConvNorm(hidden, channels))


# -- blocks ----------------------------------------------------------------------------------------------
class MetaNeXtBlock(nn.Module):
    """``x + drop_path(channel_mixer(norm(token_mixer(x))))``."""

    def __init__(self, channels: int, mlp_ratio: int = MLP_RATIO, drop_path: float = 0.0,
                 single_branch_mixer: bool = False):
        super().__init__()
        self.channels, self.single_branch_mixer = channels, single_branch_mixer
        self.token_mixer = SingleBranchDWConv(channels) if single_branch_mixer else ChunkConv(channels)
        self.norm = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.channel_mixer = mlp(channels, channels * mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.channel_mixer(self.norm(self.token_mixer(x))))


class Downsample(nn.Module):
    """``x = norm(token_mixer(x)); x + channel_mixer(x)`` with C -> 2C at stride 2."""

    def __init__(self, channels: int, mlp_ratio: int = MLP_RATIO, single_branch_mixer: bool = False):
        super().__init__()
        out = 2 * channels
        self.channels, self.single_branch_mixer = out, single_branch_mixer
        self.token_mixer = CopyConvSingle(channels) if single_branch_mixer else CopyConv(channels)
        self.norm = nn.BatchNorm2d(out, eps=BN_EPS)
        self.channel_mixer = mlp(out, out * mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.token_mixer(x))
        return x + self.channel_mixer(x)


# Which side a block's ``norm`` folds into at level 1 (multi-branch blocks; downsamples and single-branch
# mixers always fold it backward). Both exact: 'forward' (into the channel mixer's first 1x1 conv) is the
# faster graph (docs/benchmarks.md), 'backward' (into the token mixer) keeps the channel mixer's trained
# weight range.
BLOCK_NORM_FOLDS = ('forward', 'backward')


@torch.no_grad()
def _fold_norm_into_mixer(unit: nn.Module, block_norm_fold: str = 'forward') -> None:
    """Level 1 for a block or downsample: fuse the token mixer's branches and fold ``norm`` away
    (into the token mixer, or for a multi-branch block with ``block_norm_fold='forward'`` into the
    channel mixer's first 1x1 conv)."""
    if not is_norm(unit.norm):
        return  # already folded
    scale, shift = bn_scale_shift(unit.norm)
    mixer = unit.token_mixer
    if isinstance(mixer, ChunkConv) and block_norm_fold == 'forward':
        mixer.fuse_branches()
        _fold_into_next_pointwise(unit.channel_mixer, scale, shift)
    elif isinstance(mixer, (ChunkConv, CopyConv)):
        mixer.fuse_branches(scale, shift)
    else:
        fold_affine_into_single_branch(mixer, scale, shift)
    unit.norm = nn.Identity()


def _fold_into_next_pointwise(channel_mixer: nn.Sequential, scale: Tensor, shift: Tensor) -> None:
    """Fold ``x * scale + shift`` into the channel mixer's first 1x1 conv (a ConvNorm, or the biased
    conv it fuses to): exact, a 1x1 conv sees no padding. In a ConvNorm the constant the shift adds
    moves into the BN's running mean (the conv has no bias)."""
    first = channel_mixer[0]
    conv = first.conv if isinstance(first, ConvNorm) else first
    kernel, bias = fold_preceding_affine(conv.weight, conv.bias, scale, shift)
    conv.weight.copy_(kernel)
    if isinstance(first, ConvNorm):
        first.norm.running_mean.sub_(bias)
    else:
        conv.bias.copy_(bias)


class RepNeXtStage(nn.Sequential):
    """``downsample`` (``nn.Identity`` in stage 0) then ``blocks``."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, drop_paths: Sequence[float],
                 downsample: bool, single_branch_mixer: bool):
        super().__init__()
        self.downsample = Downsample(in_chs, single_branch_mixer=single_branch_mixer) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[MetaNeXtBlock(out_chs, drop_path=drop_paths[j],
                                                    single_branch_mixer=single_branch_mixer) for j in range(depth)])


class RepNeXtStem(nn.Module):
    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.stem = nn.Sequential(ConvNorm(in_chs, out_chs // 2, 3, 2, 1), nn.GELU(),
                                  ConvNorm(out_chs // 2, out_chs, 3, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.stem(x)


def _fusion_level(fusion_level: int, single_branch: Optional[bool]) -> int:
    """``fusion_level``, or from its deprecated spelling ``single_branch``."""
    if single_branch is not None:
        warnings.warn('RepNeXt(single_branch=...) is deprecated: use fusion_level=2 (single branch) or 1',
                      DeprecationWarning, stacklevel=3)
        fusion_level = 2 if single_branch else 1
    if fusion_level not in FUSION_LEVELS:
        raise ValueError(f'fusion_level must be one of {FUSION_LEVELS}, got {fusion_level!r}')
    return fusion_level


_TRAIN_KEY = re.compile(r'(^|\.)(stem\.stem\.\d+|channel_mixer\.\d+)\.conv\.weight$')
_DEPLOY_KEY = re.compile(r'(^|\.)(stem\.stem\.\d+|channel_mixer\.\d+)\.weight$')


@register_backbone
class RepNeXt(RepBackbone):
    """RepNeXt backbone: ``stem`` then ``stages.0 … stages.3`` (official keys).

    Features (``out_indices``): 0..3 = outputs of ``stages.0..3`` at strides 4/8/16/32 with
    ``embed_dim`` channels (M0 40/80/160/320 … M5 80/160/320/640). Stages for ``frozen_stages``:
    stem, stages.0, …, stages.3.

    Args (beyond :class:`RepBackbone`'s):
        arch: 'M0'…'M5', 'M0E', 'M1E', 'M2E' (also 'repnext_m3' etc., any case).
        fusion_level: what ``switch_to_deploy()`` makes: 1 (branches merged per chunk, no BN) or 2
            (one DW 11x11 per block, one DW 7x7 x2 per downsample; always 2 for the E variants). With
            ``deploy=True`` it selects which fused structure is built. See also :meth:`to_single_branch`.
            (``single_branch=True``: the old spelling of ``fusion_level=2``.)
        block_norm_fold: level 1 only: 'forward' (default, the faster graph) folds each block's ``norm``
            into its channel mixer's first 1x1 conv and passes the identity chunk through; 'backward'
            folds it into the token mixer (identity chunk -> DW 1x1 ``conv_i``; INT8-friendlier). See
            ``BLOCK_NORM_FOLDS``. Level 2 always folds backward (into the one 11x11 conv).
        drop_path_rate: stochastic depth, linear over the blocks (not the downsamples); identity in eval.
        norm_cfg: mm-style ``dict(type='BN'|'SyncBN', eps=.., momentum=..)`` for every BatchNorm.
    """
    arch_settings = ARCHS
    arch_aliases = ALIASES
    representative_archs = ('M0', 'M0E')          # a multi-branch and a single-branch form
    int8_layout = 'single-branch'

    def __init__(self, arch: str = 'M3', out_indices: Optional[Sequence[int]] = None, frozen_stages: int = -1,
                 norm_eval: bool = False, deploy: bool = False, fusion_level: int = 1,
                 block_norm_fold: str = 'forward', drop_path_rate: float = 0.0, norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None, in_channels: int = 3, with_cp: bool = False,
                 single_branch: Optional[bool] = None):
        super().__init__(out_indices, frozen_stages, norm_eval, deploy, init_cfg, with_cp)
        self.arch = self.resolve_arch(arch)
        if block_norm_fold not in BLOCK_NORM_FOLDS:
            raise ValueError(f'block_norm_fold must be one of {BLOCK_NORM_FOLDS}, got {block_norm_fold!r}')
        self.block_norm_fold = block_norm_fold
        fusion_level = _fusion_level(fusion_level, single_branch)
        spec = ARCHS[self.arch]
        self.fusion_level = 2 if spec.trained_single_branch else fusion_level
        dims, depths = spec.embed_dim, spec.depth
        self.stem = RepNeXtStem(in_channels, dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, start, stride = [], 0, 4
        self.feature_info = []
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            stages.append(RepNeXtStage(dims[i - 1] if i else dim, dim, depth, rates[start:start + depth],
                                       downsample=i > 0, single_branch_mixer=spec.trained_single_branch))
            start += depth
            stride *= 2 if i else 1
            self.feature_info.append(dict(num_chs=dim, reduction=stride, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        if norm_cfg is not None:
            apply_norm_cfg(self, norm_cfg)
        self._finish_init()

    def feature_stages(self) -> List[List[nn.Module]]:
        return [[self.stem]] + [[stage] for stage in self.stages]

    def _forward_stages(self, x: Tensor) -> List[Tensor]:
        """``feature_stages()``'s walk over ``stages`` itself (TorchScript compiles it)."""
        x = self.stem(x)
        outs: List[Tensor] = []
        for idx, stage in enumerate(self.stages):
            if idx <= self.out_indices[-1]:
                x = stage(x)
                if idx in self.out_indices:
                    outs.append(x.contiguous())    # NCHW out (see RepBackbone._walk_stages)
        return outs

    # -- fusion ----------------------------------------------------------------------------------
    def _units(self) -> List[nn.Module]:
        units = []
        for stage in self.stages:
            if isinstance(stage.downsample, Downsample):
                units.append(stage.downsample)
            units.extend(stage.blocks)
        return units

    def _reparameterize(self) -> None:
        """Order matters here, unlike in the default walk: each ``norm`` BN is folded into its token
        mixer *while* the mixer's branches are merged (the affine is split across the four chunks /
        two halves), before the walk turns ConvNorms and the head into plain layers."""
        for unit in self._units():
            _fold_norm_into_mixer(unit, self._norm_fold())
        super()._reparameterize()
        if self.fusion_level == 2:
            self._level2()

    def _norm_fold(self) -> str:
        return 'backward' if self.fusion_level == 2 else self.block_norm_fold

    @torch.no_grad()
    def _level2(self) -> None:
        for unit in self._units():
            if isinstance(unit.token_mixer, (ChunkConv, CopyConv)):
                unit.token_mixer = unit.token_mixer.single_branch_conv()

    @torch.no_grad()
    def to_single_branch(self) -> 'RepNeXt':
        """Fuse to level 2 (from the training form or from level 1), in place; returns self."""
        self.fusion_level = 2
        if not self.deploy:
            self.switch_to_deploy()
        else:
            self._level2()
        return self

    def to_official_form(self) -> nn.Module:
        """The official ``model.fuse()`` layout, in place (module function :func:`to_official_form`)."""
        if ARCHS[self.arch].trained_single_branch:
            raise NoOfficialForm(f'RepNeXt {self.arch}: no multi-branch token mixers (the single-branch '
                                 'E variants have no official fusion)')
        return to_official_form(self)

    def prepare_int8_fusion(self) -> None:
        """Fuse straight to the single branch, each block norm folded into the one 11x11 kernel (level
        2 made from level 1 would carry the norm folded forward into the channel mixer instead)."""
        if not self.deploy:
            self.fusion_level = 2

    def to_int8_layout(self) -> str:
        """Level 2 (:meth:`to_single_branch`); E forms and level 2 are single-branch already."""
        layout = super().to_int8_layout()
        self.to_single_branch()
        return layout

    # -- checkpoints -----------------------------------------------------------------------------
    @classmethod
    def state_dict_form(cls, state_dict) -> str:
        keys = list(state_dict)
        if any(_TRAIN_KEY.search(k) for k in keys):
            return 'train'
        if any(_DEPLOY_KEY.search(k) for k in keys):
            return 'deploy'
        raise ckpt.CheckpointError('not a RepNeXt state dict: no stem / channel-mixer keys '
                                   f"('stem.stem.0...', '...channel_mixer.0...'); first keys: {keys[:5]}")

    def convert_state_dict(self, state_dict: Dict[str, Tensor], form: str) -> Dict[str, Tensor]:
        """The official fused layout (``model.fuse()``, see :func:`to_official_form`) keeps every
        ``norm`` BatchNorm and has no ``conv_i``: each such unit is loaded into modules of that layout
        and its norm folded by the same code as ``switch_to_deploy``."""
        if form == 'deploy':
            official = any(k.endswith('.norm.running_mean') for k in state_dict)     # norms kept
            has_conv_i = any('.token_mixer.conv_i.' in k for k in state_dict)
            if not official and self.fusion_level == 1 and has_conv_i != (self.block_norm_fold == 'backward'):
                raise ckpt.CheckpointError(
                    'this fused RepNeXt file was made with block_norm_fold='
                    f"{'backward' if has_conv_i else 'forward'!r} ({'' if has_conv_i else 'no '}token_mixer.conv_i "
                    f"keys); build the model with block_norm_fold={'backward' if has_conv_i else 'forward'!r}")
            for name, unit in self.named_modules():
                if isinstance(unit, (MetaNeXtBlock, Downsample)) and f'{name}.norm.running_mean' in state_dict:
                    _fold_official_unit(state_dict, f'{name}.', unit, self._norm_fold())
        return state_dict


@torch.no_grad()
def to_official_form(module: nn.Module) -> nn.Module:
    """In place, what the official RepNeXt ``model.fuse()`` produces (on any module holding RepNeXt
    parts): branches merged per chunk, ConvNorms and the distillation head fused, the ``norm`` BN
    after each token mixer kept, the identity chunk passed through (no ``conv_i``). Returns ``module``."""
    for unit in [m for m in module.modules() if isinstance(m, (MetaNeXtBlock, Downsample))]:
        if isinstance(unit.token_mixer, (ChunkConv, CopyConv)):
            unit.token_mixer.fuse_branches()
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (ConvNorm, DistillationHead)):
                setattr(parent, name, child.fuse())
    return module


def _fold_official_unit(state_dict: Dict[str, Tensor], prefix: str, unit: nn.Module, block_norm_fold: str) -> None:
    """Fold the kept ``norm`` of one block / downsample of an official fused file, in the state dict."""
    single = unit.single_branch_mixer
    twin = (MetaNeXtBlock(unit.channels, single_branch_mixer=single) if isinstance(unit, MetaNeXtBlock)
            else Downsample(unit.channels // 2, single_branch_mixer=single))
    to_official_form(twin)
    keys = [k for k in state_dict if k.startswith(prefix)]
    twin.load_state_dict({k[len(prefix):]: state_dict.pop(k) for k in keys})
    _fold_norm_into_mixer(twin, block_norm_fold)
    state_dict.update({prefix + k: v for k, v in twin.state_dict().items()})


# -- classifier ------------------------------------------------------------------------------------------
class NormLinear(nn.Module):
    """BatchNorm1d -> Linear (official keys ``norm`` / ``linear``)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(in_features, eps=BN_EPS)
        self.linear = nn.Linear(in_features, out_features)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm(x))

    @torch.no_grad()
    def kernel_bias(self) -> Tuple[Tensor, Tensor]:
        scale, shift = bn_scale_shift(self.norm)
        return self.linear.weight * scale[None, :], self.linear.bias + self.linear.weight @ shift


class DistillationHead(nn.Module):
    """``head`` + ``head_dist``; training with distillation returns both, otherwise their mean."""

    def __init__(self, in_features: int, num_classes: int, distillation: bool = True):
        super().__init__()
        self.head = NormLinear(in_features, num_classes)
        self.head_dist = NormLinear(in_features, num_classes)
        self.distillation = distillation

    def forward(self, x: Tensor):
        x1, x2 = self.head(x), self.head_dist(x)
        if self.training and self.distillation and not torch.jit.is_scripting():
            return x1, x2
        return (x1 + x2) / 2

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        """The single ``nn.Linear`` equal to the eval-mode mean of both heads."""
        (w1, b1), (w2, b2) = self.head.kernel_bias(), self.head_dist.kernel_bias()
        linear = nn.Linear(w1.shape[1], w1.shape[0]).to(w1)
        linear.weight.copy_((w1 + w2) / 2)
        linear.bias.copy_((b1 + b2) / 2)
        return linear


@register_classifier('RepNeXt')
class RepNeXtClassifier(ClassifierForm, RepNeXt):
    """The ImageNet classifier: backbone -> global average pool -> dropout -> distillation head.
    Keys equal the official checkpoints'; fusion also turns the two heads into one ``nn.Linear``
    (``head.weight`` / ``head.bias``, as the official fused model: ``DistillationHead.fuse``)."""
    classifier_name = 'head'
    paper_table = PAPER_TABLE
    timm_prefix = 'repnext'
    # timm's convention for distilled models (LeViT, RepViT): one output in training too, unless asked
    # for (the official training returns (head, head_dist) for the distillation loss).
    timm_defaults = dict(distillation=False)

    @classmethod
    def timm_release(cls, arch: str) -> dict:
        released = not ARCHS[arch].trained_single_branch       # release v1.0: the M0-M5 distilled checkpoints
        file = f'repnext_{arch.lower()}_distill_300e.pth' if released else ''
        return dict(first_conv='stem.stem.0.conv', classifier=('head.head.linear', 'head.head_dist.linear'),
                    file_name=file, url=f'{RELEASE_URL}/{file}' if released else '', key='model' if released else '',
                    origin='https://github.com/suous/RepNeXt', license='apache-2.0')

    def __init__(self, arch: str = 'M0', num_classes: int = 1000, distillation: bool = True,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, deploy: bool = False,
                 fusion_level: int = 1, init_cfg: Optional[dict] = None, in_channels: int = 3,
                 single_branch: Optional[bool] = None, global_pool: str = 'avg'):
        super().__init__(arch, out_indices=(3,), deploy=False, fusion_level=_fusion_level(fusion_level, single_branch),
                         drop_path_rate=drop_path_rate, init_cfg=init_cfg, in_channels=in_channels)
        self.drop_rate, self.distillation, self.in_chans = drop_rate, distillation, in_channels
        self.num_features = self.head_hidden_size = self.feature_info[-1]['num_chs']
        self.finish_classifier(num_classes, deploy, global_pool)

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups in depth order (layer-wise decay), RepViT's: stem, stages
        (``coarse``) or downsample / blocks; the head comes last."""
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else [
            (r'^stages\.(\d+)\.downsample', (0,)), (r'^stages\.(\d+)\.blocks\.(\d+)', None)])

    def forward_head(self, x: Tensor, pre_logits: bool = False):
        x = F.dropout(self.flatten(self.global_pool(x)), p=self.drop_rate, training=self.training)
        return x if pre_logits else self.head(x)

    def drop_stages_after(self, index: int) -> None:
        self.stages = self.stages[:index + 1]

    def new_classifier(self, num_classes: int) -> nn.Module:
        """The distillation head, or (fused model) the one Linear it fuses to."""
        if self.deploy:
            return nn.Linear(self.head_hidden_size, num_classes)
        return DistillationHead(self.head_hidden_size, num_classes, self.distillation)
