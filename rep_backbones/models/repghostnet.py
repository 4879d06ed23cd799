"""RepGhostNet (Chen et al., 2022) as a multi-scale backbone and as the ImageNet classifier.

Blocks are timm's ``RepGhostBottleneck`` (state-dict keys identical to the official release); this
file adds the stage table, the feature taps (the *deepest* block at each stride, which timm's own
``features_only`` does not pick at stride 16), and a complete fusion: the BN-only branch of every
RepGhost module into its depthwise conv, plus every conv+BN pair, so no BatchNorm remains.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.layers import make_divisible
from timm.models.repghost import RepGhostBottleneck, RepGhostModule
from torch import Tensor, nn

from .. import checkpoint as ckpt
from ..reparam import (bn_branch, conv_bn_branch, fold_bn_pairs, fold_bn_pairs_in_state_dict, identity_kernel,
                       is_norm, make_conv, merge_branches)
from .base import RepBackbone, apply_norm_cfg
from .registry import register_backbone, register_classifier

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
WIDTHS = {'0.5x': 0.5, '0.58x': 0.58, '0.8x': 0.8, '1.0x': 1.0, '1.11x': 1.11, '1.3x': 1.3, '1.5x': 1.5,
          '2.0x': 2.0}
BN_EPS = 1e-5


def _width_aliases() -> Dict[str, str]:
    aliases = {}
    for name in WIDTHS:
        flat = name.replace('.', '_')                      # '1_0x', as in official file names
        aliases.update({name[:-1]: name, flat: name, f'repghostnet_{flat}': name})
    return aliases


class ConvBnAct(nn.Module):
    """1x1 conv -> BN -> ReLU with the official key names (``conv``, ``bn1``).

    Plain ``BatchNorm2d`` + separate ReLU (timm's version fuses the act into the norm layer, which a
    SyncBatchNorm conversion would silently drop)."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs, eps=BN_EPS)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn1(self.conv(x)))


@register_backbone
class RepGhostNet(RepBackbone):
    """RepGhostNet backbone: ``conv_stem/bn1/act1`` then ``blocks.0 … blocks.9`` (official keys).

    Features (``out_indices``): 0..3 = outputs of ``blocks.2/4/6/8`` at strides 4/8/16/32, and
    4 = the final 1x1 ConvBnAct (``blocks.9``, stride 32, ``make_div(960 * w)`` channels).
    Stages for ``frozen_stages``: stem, blocks 0-2, 3-4, 5-6, 7-8, 9 (built only if feature 4 is used).
    """
    arch_settings = WIDTHS
    arch_aliases = _width_aliases()

    def __init__(self, arch: str = '1.0x', out_indices: Optional[Sequence[int]] = None, frozen_stages: int = -1,
                 norm_eval: bool = False, deploy: bool = False, norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None, in_channels: int = 3):
        super().__init__(out_indices, frozen_stages, norm_eval, deploy, init_cfg)
        self.arch = self.resolve_arch(arch)
        width = WIDTHS[self.arch]
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
            blocks.append(nn.Sequential(ConvBnAct(prev, final_chs)))
        self.blocks = nn.Sequential(*blocks)
        if norm_cfg is not None:
            apply_norm_cfg(self, norm_cfg)
        self._finish_init()

    def feature_stages(self) -> List[List[nn.Module]]:
        bounds = (0,) + tuple(b + 1 for b in FEATURE_BLOCKS)
        return [[self.conv_stem, self.bn1, self.act1]] + [
            list(self.blocks[start:end]) for start, end in zip(bounds[:-1], bounds[1:])]

    # -- fusion ----------------------------------------------------------------------------------
    def _conv_bn_pairs(self) -> List[Tuple[str, str]]:
        """Every (conv, following BN) pair, by module name, in the training structure."""
        pairs = [('conv_stem', 'bn1')]
        for i, stage in enumerate(self.blocks[:len(STAGE_TABLE)]):  # blocks.9 (ConvBnAct) comes last
            for j, block in enumerate(stage):
                name = f'blocks.{i}.{j}'
                pairs += [(f'{name}.ghost1.primary_conv.0', f'{name}.ghost1.primary_conv.1'),
                          (f'{name}.ghost2.primary_conv.0', f'{name}.ghost2.primary_conv.1')]
                if block.conv_dw is not None:
                    pairs.append((f'{name}.conv_dw', f'{name}.bn_dw'))
                if len(block.shortcut):
                    pairs += [(f'{name}.shortcut.0', f'{name}.shortcut.1'),
                              (f'{name}.shortcut.2', f'{name}.shortcut.3')]
        if self.has_final_conv:
            pairs.append((f'blocks.{len(STAGE_TABLE)}.0.conv', f'blocks.{len(STAGE_TABLE)}.0.bn1'))
        return pairs

    def is_head_key(self, key: str) -> bool:
        return RepBackbone.is_head_key(key) or (not self.has_final_conv and key.startswith('blocks.9.'))

    def _reparameterize(self) -> None:
        for module in self.modules():
            if isinstance(module, RepGhostModule):
                fuse_ghost_branches(module)
        fold_bn_pairs(self, self._conv_bn_pairs())

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

    def convert_state_dict(self, state_dict: Dict[str, Tensor], form: str) -> Dict[str, Tensor]:
        # The official converter (and timm's) leaves conv+BN pairs unfused: fold them here.
        if form == 'deploy':
            fold_bn_pairs_in_state_dict(state_dict, self._conv_bn_pairs(), eps=BN_EPS)
        return state_dict


@torch.no_grad()
def fuse_ghost_branches(module: RepGhostModule) -> None:
    """Fold a RepGhost module's depthwise conv + BN and its identity/BN branches into one biased
    depthwise conv (``cheap_operation``), as the official converter does."""
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


@register_classifier('RepGhostNet')
class RepGhostNetClassifier(RepGhostNet):
    """The ImageNet classifier (official head: GAP -> 1x1 conv 1280 with bias -> ReLU -> dropout ->
    Linear). Keys equal the official checkpoints'; ``switch_to_deploy`` fuses the body."""

    def __init__(self, arch: str = '1.0x', num_classes: int = 1000, drop_rate: float = 0.2,
                 deploy: bool = False, init_cfg: Optional[dict] = None):
        super().__init__(arch, out_indices=(4,), deploy=False, init_cfg=init_cfg)
        self.drop_rate = drop_rate
        self.conv_head = nn.Conv2d(self.feature_info[-1]['num_chs'], 1280, 1, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.classifier = nn.Linear(1280, num_classes)
        if deploy:
            self.switch_to_deploy()

    def is_head_key(self, key: str) -> bool:
        return False

    def forward(self, x: Tensor) -> Tensor:
        (x,) = super().forward(x)
        x = self.act2(self.conv_head(F.adaptive_avg_pool2d(x, 1)))
        x = F.dropout(torch.flatten(x, 1), p=self.drop_rate, training=self.training)
        return self.classifier(x)
