"""RepGhostNet (Chen et al., 2022) as a multi-scale backbone and as the ImageNet classifier.

Blocks are timm's ``RepGhostBottleneck`` (state-dict keys identical to the official release); this
file adds the variant and stage tables, the feature taps (the *deepest* block at each stride, which
timm's own ``features_only`` does not pick at stride 16), and a complete fusion.

Training-form RepGhost module (``ghost1`` / ``ghost2`` of every bottleneck), input ``x``::

    y = relu?(primary_conv(x))                 # 1x1 conv -> BN (-> ReLU)
    out = relu?(cheap_operation(y) + fusion_bn(y))    # DW k x k conv -> BN, plus a BN-only branch

Deploy form (``switch_to_deploy``; no BatchNorm left)::

    y = relu?(primary_conv(x))                 # biased 1x1 conv
    out = relu?(cheap_operation(y))            # biased DW k x k conv (BN branch folded in)

and every other conv+BN pair (stem, strided DW conv, shortcut, final conv) folded too — more than
the official converter, which keeps those BNs (its files load: see ``convert_state_dict``).
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from timm.layers import make_divisible
from timm.models.repghost import RepGhostBottleneck, RepGhostModule
from torch import Tensor, nn

from .. import checkpoint as ckpt
from ..reparam import bn_branch, conv_bn_branch, identity_kernel, is_norm, make_conv, merge_branches
from .base import RepBackbone, apply_norm_cfg, arch_aliases
from .layers import BN_EPS, ConvNormAct, OfficialClassifierHead, figures_table
from .registry import register_backbone, register_classifier


class RepGhostNetArch(NamedTuple):
    width: float              # multiplier of every stage's mid / out channels (make_divisible by 4)
    timm_name: str            # timm's model name of the same net


ARCHS: Dict[str, RepGhostNetArch] = {
    name: RepGhostNetArch(width, f'repghostnet_{round(width * 100):03d}')
    for name, width in (('0.5x', 0.5), ('0.58x', 0.58), ('0.8x', 0.8), ('1.0x', 1.0), ('1.11x', 1.11),
                        ('1.3x', 1.3), ('1.5x', 1.5), ('2.0x', 2.0))}
# '1.0', '1_0x' (official file names), 'repghostnet_1_0x', timm's 'repghostnet_100'.
ALIASES = arch_aliases(ARCHS, extra={
    spelling: name for name, spec in ARCHS.items()
    for spelling in (name[:-1], name.replace('.', '_'), f"repghostnet_{name.replace('.', '_')}", spec.timm_name)})

# One row per block: (kernel, mid channels, out channels, SE ratio, stride) at width 1.0; one inner
# list per ``blocks.N`` (official layout). Widths scale mid/out with make_divisible(divisor=4).
STAGE_TABLE: List[List[Tuple[int, int, int, float, int]]] = [
    [(3, 8, 16, 0, 1)],                                                      # blocks.0  stride 2
    [(3, 24, 24, 0, 2)],                                                     # blocks.1  stride 4
    [(3, 36, 24, 0, 1)],                                                     # blocks.2  stride 4
    [(5, 36, 40, 0.25, 2)],                                                  # blocks.3  stride 8
    [(5, 60, 40, 0.25, 1)],                                                  # blocks.4  stride 8
    [(3, 120, 80, 0, 2)],                                                    # blocks.5  stride 16
    [(3, 100, 80, 0, 1), (3, 120, 80, 0, 1), (3, 120, 80, 0, 1),
     (3, 240, 112, 0.25, 1), (3, 336, 112, 0.25, 1)],                        # blocks.6  stride 16
    [(5, 336, 160, 0.25, 2)],                                                # blocks.7  stride 32
    [(5, 480, 160, 0, 1), (5, 480, 160, 0.25, 1), (5, 480, 160, 0, 1),
     (5, 480, 160, 0.25, 1)],                                                # blocks.8  stride 32
]
# Blocks ending each feature stage (deepest block at strides 4, 8, 16, 32), then the final 1x1 conv.
FEATURE_BLOCKS = (2, 4, 6, 8, 9)

# RepGhost's published ImageNet classifier figures, beside our counts in rep_backbones.complexity.
PAPER_TABLE = dict(
    source='ChengpengChen/RepGhost README.md (Params/FLOPs) + exact counts of the official model/repghost.py',
    note='the paper counts the official deploy form (RepGhost branches fused, conv+BN pairs kept); our fusion '
         'also folds every conv+BN, so "ours fused" has fewer parameters',
    official_deploy=True, readme_params_form='official_deploy',
    variants=figures_table("""
        variant  train_params  official_deploy_params  macs     readme_params  readme_macs
        0.5x     2,313,968     2,306,528               43.31M   2.3M           43M
        0.58x    2,546,388     2,537,736               59.80M   2.5M           60M
        0.8x     3,278,968     3,267,112               95.52M   3.3M           96M
        1.0x     4,073,604     4,058,772               142.39M  4.1M           142M
        1.11x    4,539,984     4,523,568               170.12M  4.5M           170M
        1.3x     5,478,612     5,459,316               231.12M  5.5M           231M
        1.5x     6,575,336     6,553,064               301.32M  6.6M           301M
        2.0x     9,796,124     9,766,460               515.87M  9.8M           516M
    """))


# -- block fusion (the blocks are timm's) -------------------------------------------------------------
@torch.no_grad()
def fuse_ghost_branches(module: RepGhostModule) -> None:
    """In place: a RepGhost module's depthwise conv + BN and its identity/BN branches become one
    biased depthwise conv (``cheap_operation``), as the official converter does. Used instead of
    timm's ``RepGhostModule.switch_to_deploy``, which accepts only ``nn.BatchNorm2d`` (not SyncBN)."""
    if isinstance(module.cheap_operation, nn.Conv2d):
        return
    dw_conv, dw_bn = module.cheap_operation
    branches = [conv_bn_branch(dw_conv, dw_bn)]
    for conv, norm in zip(module.fusion_conv, module.fusion_bn):
        if not isinstance(conv, nn.Identity):
            raise TypeError(f'unexpected RepGhost fusion branch {type(conv).__name__}')
        if is_norm(norm):
            branches.append(bn_branch(norm, groups=dw_conv.groups))
        else:  # plain identity branch (the official 'reparam_identity' ablation)
            kernel = identity_kernel(dw_conv.out_channels, dw_conv.groups, dtype=dw_conv.weight.dtype,
                                     device=dw_conv.weight.device)
            branches.append((kernel, torch.zeros(dw_conv.out_channels, dtype=kernel.dtype, device=kernel.device)))
    module.cheap_operation = make_conv(dw_conv, *merge_branches(branches))
    module.fusion_conv = nn.Sequential()
    module.fusion_bn = nn.Sequential()


@register_backbone
class RepGhostNet(RepBackbone):
    """RepGhostNet backbone: ``conv_stem/bn1/act1`` then ``blocks.0 … blocks.9`` (official keys).

    Features (``out_indices``): 0..3 = outputs of ``blocks.2/4/6/8`` at strides 4/8/16/32, and
    4 = the final 1x1 ConvBnAct (``blocks.9``, stride 32, ``make_div(960 * w)`` channels).
    Stages for ``frozen_stages``: stem, blocks 0-2, 3-4, 5-6, 7-8, 9 (built only if feature 4 is used).
    """
    arch_settings = ARCHS
    arch_aliases = ALIASES
    representative_archs = ('1.0x',)

    def __init__(self, arch: str = '1.0x', out_indices: Optional[Sequence[int]] = None, frozen_stages: int = -1,
                 norm_eval: bool = False, deploy: bool = False, norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None, in_channels: int = 3, with_cp: bool = False):
        super().__init__(out_indices, frozen_stages, norm_eval, deploy, init_cfg, with_cp)
        self.arch = self.resolve_arch(arch)
        self.feature_blocks = FEATURE_BLOCKS    # an attribute: TorchScript cannot read a global tuple
        width = ARCHS[self.arch].width
        stem_chs = make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(in_channels, stem_chs, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_chs, eps=BN_EPS)
        self.act1 = nn.ReLU(inplace=True)

        blocks, prev, stride = [], stem_chs, 2
        self.feature_info = []
        for idx, rows in enumerate(STAGE_TABLE):
            layers = []
            for k, mid, out, se_ratio, s in rows:
                out_chs, mid_chs = make_divisible(out * width, 4), make_divisible(mid * width, 4)
                layers.append(RepGhostBottleneck(prev, mid_chs, out_chs, k, s, se_ratio=se_ratio, reparam=True))
                prev, stride = out_chs, stride * s
            blocks.append(nn.Sequential(*layers))
            if idx in FEATURE_BLOCKS:
                self.feature_info.append(dict(num_chs=prev, reduction=stride, module=f'blocks.{idx}'))
        final_chs = make_divisible(STAGE_TABLE[-1][-1][1] * width * 2, 4)
        self.feature_info.append(dict(num_chs=final_chs, reduction=stride, module='blocks.9'))
        # The final 1x1 conv exists only when feature 4 is asked for: unused parameters would break
        # DDP and waste optimizer state. Its checkpoint keys are then reported as ignored.
        self.has_final_conv = any(i % len(self.feature_info) == 4 for i in self.out_indices)
        if self.has_final_conv:
            blocks.append(nn.Sequential(ConvNormAct(prev, final_chs)))
        self.blocks = nn.Sequential(*blocks)
        if norm_cfg is not None:
            apply_norm_cfg(self, norm_cfg)
        self._finish_init()

    def feature_stages(self) -> List[List[nn.Module]]:
        bounds = (0,) + tuple(b + 1 for b in FEATURE_BLOCKS)
        return [[self.conv_stem, self.bn1, self.act1]] + [
            list(self.blocks[start:end]) for start, end in zip(bounds[:-1], bounds[1:])]

    def _forward_stages(self, x: Tensor) -> List[Tensor]:
        """``feature_stages()``'s walk over ``blocks`` itself (TorchScript compiles it)."""
        x = self.act1(self.bn1(self.conv_stem(x)))
        taps = [self.feature_blocks[i] for i in self.out_indices]
        outs: List[Tensor] = []
        for idx, block in enumerate(self.blocks):
            if idx <= taps[-1]:
                x = block(x)
                if idx in taps:
                    outs.append(x.contiguous())    # NCHW out (see RepBackbone._walk_stages)
        return outs

    # -- fusion (the default walk; these pairs sit outside any nn.Sequential) -------------------------
    foreign_conv_bn_pairs = {RepGhostBottleneck: (('conv_dw', 'bn_dw'),)}     # strided blocks only

    def conv_bn_pairs(self) -> List[Tuple[str, str]]:
        return [('conv_stem', 'bn1')]

    def is_head_key(self, key: str) -> bool:
        return RepBackbone.is_head_key(key) or (not self.has_final_conv and key.startswith('blocks.9.'))

    def _reparameterize(self) -> None:
        self.to_official_form()
        super()._reparameterize()

    @torch.no_grad()
    def to_official_form(self) -> nn.Module:
        """The official converter (``convert_to_deploy``, timm's ``RepGhostModule.switch_to_deploy``):
        only each RepGhost module's branches fused (:func:`fuse_ghost_branches`); every other conv+BN
        pair keeps its BN (48 BatchNorms left in the 1.0x classifier)."""
        for module in self.modules():
            if isinstance(module, RepGhostModule):
                fuse_ghost_branches(module)
        return self

    # -- checkpoints -----------------------------------------------------------------------------
    @classmethod
    def state_dict_form(cls, state_dict) -> str:
        keys = list(state_dict)
        if any('.fusion_bn.' in k or '.cheap_operation.0.' in k for k in keys):
            return 'train'
        if any(k.endswith('.cheap_operation.weight') for k in keys):
            return 'deploy'
        raise ckpt.CheckpointError('not a RepGhostNet state dict: no ghost-module keys '
                                   f"('...cheap_operation...'); first keys: {keys[:5]}")



@register_classifier('RepGhostNet')
class RepGhostNetClassifier(OfficialClassifierHead, RepGhostNet):
    """The ImageNet classifier (official head, see :class:`OfficialClassifierHead`). Keys equal the
    official checkpoints'; ``switch_to_deploy`` fuses the body."""
    paper_table = PAPER_TABLE

    def __init__(self, arch: str = '1.0x', num_classes: int = 1000, drop_rate: float = 0.2,
                 deploy: bool = False, init_cfg: Optional[dict] = None, in_channels: int = 3,
                 global_pool: str = 'avg'):
        super().__init__(arch, out_indices=(4,), deploy=False, init_cfg=init_cfg, in_channels=in_channels)
        self.in_chans = in_channels
        self.init_head(self.feature_info[-1]['num_chs'], num_classes, drop_rate)
        self.finish_classifier(num_classes, deploy, global_pool)

    def drop_stages_after(self, index: int) -> None:
        self.blocks = self.blocks[:self.feature_blocks[index] + 1]
        self.has_final_conv = False     # called for an index before the final conv's
