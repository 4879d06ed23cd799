"""MobileNetV4 conv models S/M/L (Qin et al., 2024): backbone and ImageNet classifier.

The variant table is written as the paper's conv-S/M/L tables (= timm's ``mobilenetv4_conv_*`` arch
defs). RepGhostNetV2 (``repghostnetv2.py``) is this net with RepGhost's shortcut placement.

Key layout = timm's MobileNetV4: ``conv_stem``/``bn1``, ``blocks.{stage}.{block}`` with ``conv``/``bn1``
(ConvBnAct), ``conv_exp``/``bn1``/``conv_pwl``/``bn2`` (fused IR, M/L stage 0) and
``dw_start``/``pw_exp``/``dw_mid``/``pw_proj``/``dw_end`` ``.{conv,bn}`` (UIB), ``blocks.4.0`` = the
960-ch 1x1 conv. So timm's ``mobilenetv4_conv_{small,medium,large}`` checkpoints load as they are; the
official RepGhostNetV2 repository's layout (``layers.{i}.start_dw_/expand_conv/middle_dw/proj_conv/
end_dw.{conv,bn1}``, for both of its nets) goes through :func:`convert_official_state_dict`, which
``load_pretrained`` applies by itself.

Training form: every conv is ``ConvNormAct`` (conv -> BN -> optional ReLU; with ``reparam_bn=True``
RepGhost's BN-only branch beside every stride-1 depthwise conv, summed before the activation) or the
FusedIB's conv/BN pairs. Deploy form (``switch_to_deploy``): every conv biased, every BN and BN-only
branch folded in, no BatchNorm left; the graph is otherwise unchanged. Modules are plain ``Conv2d`` +
``BatchNorm2d`` + separate activation (not timm's ``BatchNormAct2d``, whose activation a SyncBatchNorm
conversion would silently drop).
"""
from __future__ import annotations

import logging
from collections import namedtuple
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from timm.layers import DropPath, make_divisible
from torch import Tensor, nn

from .. import checkpoint as ckpt
from ..reparam import fold_bn_pairs_in_state_dict
from .base import RepBackbone, apply_norm_cfg, arch_aliases
from .layers import BN_EPS, ConvNormAct, OfficialClassifierHead, figures_table
from .registry import BACKBONES, register_backbone, register_classifier

logger = logging.getLogger('rep_backbones')

# Block specs. CN: k x k ConvBnAct (act None = the 1x1 stem-stage convs of S, see ``stem_1x1_act``);
# ER: fused inverted residual (k x k expand conv + BN + ReLU, 1x1 project + BN), MNv4's "FusedIB";
# UIB: universal inverted bottleneck with start / middle / end depthwise kernels (0 = absent), the
# stride on the middle DW (or on the start DW when there is no middle one), expansion via
# make_divisible(in * exp, 8).
CN = namedtuple('CN', 'kernel stride out act')
ER = namedtuple('ER', 'kernel stride out exp')
UIB = namedtuple('UIB', 'start mid end stride out exp')


def _uib(start: int, mid: int, stride: int, out: int, exp: float, repeat: int = 1) -> List[UIB]:
    """MobileNetV4-form UIBs (no end DW); only the first of ``repeat`` carries the stride."""
    return [UIB(start, mid, 0, stride if i == 0 else 1, out, exp) for i in range(repeat)]


class MobileNetV4Arch(NamedTuple):
    stem: int                 # stem conv channels
    img_size: int             # ImageNet training resolution
    stages: List[list]        # five stages of CN / ER / UIB specs: strides 4, 8, 16, 32, then the 960-ch 1x1 conv
    timm_name: str            # timm's MobileNetV4 name ('mobilenetv4_conv_small'); RepGhostNetV2: 'repghostnetv2_s'


HEAD_STAGE = [CN(1, 1, 960, True)]
# Transcribed from the MobileNetV4 paper's conv-S/M/L tables (= timm's arch defs).
ARCHS: Dict[str, MobileNetV4Arch] = {
    'S': MobileNetV4Arch(stem=32, img_size=224, timm_name='mobilenetv4_conv_small', stages=[
        [CN(3, 2, 32, True), CN(1, 1, 32, None)],
        [CN(3, 2, 96, True), CN(1, 1, 64, None)],
        _uib(5, 5, 2, 96, 3) + _uib(0, 3, 1, 96, 2, 4) + _uib(3, 0, 1, 96, 4),
        _uib(3, 3, 2, 128, 6) + _uib(5, 5, 1, 128, 4) + _uib(0, 5, 1, 128, 4) + _uib(0, 5, 1, 128, 3)
        + _uib(0, 3, 1, 128, 4, 2),
        HEAD_STAGE]),
    'M': MobileNetV4Arch(stem=32, img_size=256, timm_name='mobilenetv4_conv_medium', stages=[
        [ER(3, 2, 48, 4)],
        _uib(3, 5, 2, 80, 4) + _uib(3, 3, 1, 80, 2),
        _uib(3, 5, 2, 160, 6) + _uib(3, 3, 1, 160, 4, 2) + _uib(3, 5, 1, 160, 4) + _uib(3, 3, 1, 160, 4)
        + _uib(3, 0, 1, 160, 4) + _uib(0, 0, 1, 160, 2) + _uib(3, 0, 1, 160, 4),
        _uib(5, 5, 2, 256, 6) + _uib(5, 5, 1, 256, 4) + _uib(3, 5, 1, 256, 4, 2) + _uib(0, 0, 1, 256, 4)
        + _uib(3, 0, 1, 256, 4) + _uib(3, 5, 1, 256, 2) + _uib(5, 5, 1, 256, 4) + _uib(0, 0, 1, 256, 4, 2)
        + _uib(5, 0, 1, 256, 2),
        HEAD_STAGE]),
    'L': MobileNetV4Arch(stem=24, img_size=384, timm_name='mobilenetv4_conv_large', stages=[
        [ER(3, 2, 48, 4)],
        _uib(3, 5, 2, 96, 4) + _uib(3, 3, 1, 96, 4),
        _uib(3, 5, 2, 192, 4) + _uib(3, 3, 1, 192, 4, 3) + _uib(3, 5, 1, 192, 4) + _uib(5, 3, 1, 192, 4, 5)
        + _uib(3, 0, 1, 192, 4),
        _uib(5, 5, 2, 512, 4, 4) + _uib(5, 0, 1, 512, 4) + _uib(5, 3, 1, 512, 4) + _uib(5, 0, 1, 512, 4, 2)
        + _uib(5, 3, 1, 512, 4) + _uib(5, 5, 1, 512, 4) + _uib(5, 0, 1, 512, 4, 3),
        HEAD_STAGE]),
}
SIZE_WORDS = {'S': 'small', 'M': 'medium', 'L': 'large'}    # 'small', 'mobilenetv4_conv_small', ...
FEATURE_STAGES = 4            # blocks.0..3 end at strides 4/8/16/32; blocks.4 is the 960-ch 1x1 conv

# The published figures of the ImageNet classifier (rep_backbones.complexity puts our counts beside them).
# Strings keep their precision: '4,073,604' is exact, '142.39M' matches every count that rounds to it.
# Exact counts of the RepGhostNetV2 repository's model code, which RepGhostNetV2 shares (its moved
# depthwise convs change neither). FLOPs claimed by the papers = conv + linear MACs + 1,280 (conv_head bias).
PAPER_COUNTS = figures_table("""
    variant  input  train_params  macs           readme_macs
    S        224    3,772,744     186,005,568    186,006,848
    M        256    9,714,232     1,080,244,224  1,080,245,504
    L        384    32,589,584    6,376,220,672  6,376,221,952
""")
PAPER_TABLE = dict(
    source='ChengpengChen/RepGhostNetV2 model/mobilenetv4.py (same counts as RepGhostNetV2)',
    note="timm's mobilenetv4_conv_* models have +1,280 params (head conv without bias + BN); claimed FLOPs "
         '= MACs + 1,280', readme_params_form='train', readme_macs_offset=1280, variants=PAPER_COUNTS)


# -- blocks --------------------------------------------------------------------------------------
class FusedInvertedResidual(nn.Module):
    """MobileNetV4's FusedIB (timm ``EdgeResidual`` keys): k x k conv expand -> BN -> ReLU -> 1x1 conv
    -> BN, plus identity when shapes allow."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, exp: float, drop_path: float = 0.):
        super().__init__()
        mid = make_divisible(in_chs * exp)
        self.has_skip = in_chs == out_chs and stride == 1
        self.conv_exp = nn.Conv2d(in_chs, mid, kernel, stride, kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.act = nn.ReLU(inplace=True)
        self.conv_pwl = nn.Conv2d(mid, out_chs, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs, eps=BN_EPS)
        self.drop_path = DropPath(drop_path) if drop_path and self.has_skip else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv_pwl(self.act(self.bn1(self.conv_exp(x)))))
        return self.drop_path(y) + x if self.has_skip else y

    def conv_bn_pairs(self) -> List[Tuple[str, str]]:
        return [('conv_exp', 'bn1'), ('conv_pwl', 'bn2')]


class UniversalInvertedBottleneck(nn.Module):
    """UIB: [start DW, no act] -> 1x1 expand + ReLU -> [middle DW + ReLU] -> 1x1 project ->
    [end DW, no act] -> + identity (when shapes allow). Absent DWs are ``nn.Identity`` (timm's keys)."""

    def __init__(self, in_chs: int, out_chs: int, spec: UIB, reparam_bn: bool = False, drop_path: float = 0.):
        super().__init__()
        stride = spec.stride
        mid = make_divisible(in_chs * spec.exp)
        self.has_skip = in_chs == out_chs and stride == 1
        if stride > 1 and not (spec.start or spec.mid):
            raise ValueError(f'strided UIB {spec} needs a start or middle depthwise conv')

        def dw(chs: int, kernel: int, s: int, act: bool) -> nn.Module:
            if not kernel:
                return nn.Identity()
            return ConvNormAct(chs, chs, kernel, s, groups=chs, act=act, norm_name='bn',
                             rep_bn=reparam_bn and s == 1)

        self.dw_start = dw(in_chs, spec.start, 1 if spec.mid else stride, False)
        self.pw_exp = ConvNormAct(in_chs, mid, 1, norm_name='bn')
        self.dw_mid = dw(mid, spec.mid, stride, True)
        self.pw_proj = ConvNormAct(mid, out_chs, 1, act=False, norm_name='bn')
        self.dw_end = dw(out_chs, spec.end, 1, False)
        self.drop_path = DropPath(drop_path) if drop_path and self.has_skip else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.dw_end(self.pw_proj(self.dw_mid(self.pw_exp(self.dw_start(x)))))
        return self.drop_path(y) + x if self.has_skip else y


# -- backbone ----------------------------------------------------------------------------------------
@register_backbone
class MobileNetV4(RepBackbone):
    """MobileNetV4 conv backbone (S/M/L); the builder :class:`~.repghostnetv2.RepGhostNetV2` reuses.

    Loads timm's ``mobilenetv4_conv_{small,medium,large}`` checkpoints directly, the RepGhostNetV2
    repository's layout (``layers.*``) through :func:`convert_official_state_dict`.

    Args:
        arch: 'S' | 'M' | 'L' (or 'small' | 'medium' | 'large'; case-insensitive).
        out_indices: features 0..3 = outputs of ``blocks.0..3`` (the deepest block at strides
            4/8/16/32: S 32/64/96/128, M 48/80/160/256, L 48/96/192/512 channels); 4 = the 960-ch
            1x1 ConvBnAct (``blocks.4``, stride 32). Default (0, 1, 2, 3).
        frozen_stages: -1 none; 0 the stem; n the stem and ``blocks.0 .. blocks.{n-1}``.
        norm_eval: keep every BN / SyncBN in eval mode during training.
        deploy: build the fused structure (biased convs, no BatchNorm).
        reparam_bn: add RepGhost's training-time BN-only branch beside every stride-1 depthwise conv
            (folded away by fusion); default False (checkpoints have no such branch: loading one into
            a ``reparam_bn=True`` model initialises the branches to zero, which keeps its function).
        stem_1x1_act: ReLU after the two 1x1 ConvBnAct of S's stride-4/8 stages (``blocks.0.1``,
            ``blocks.1.1``); None = the net's convention (MobileNetV4: True as in timm and its weights;
            RepGhostNetV2: False as in the official repository, whose MobileNetV4-S has none either).
        drop_path_rate: stochastic depth on residual blocks, rising linearly over blocks (timm rule).
        norm_cfg: mm-style ``dict(type='BN' | 'SyncBN', eps=..., momentum=...)`` for every BN.
        init_cfg: see :class:`RepBackbone`.
    """
    arch_settings = ARCHS
    representative_archs = ('S',)
    arch_aliases = arch_aliases(ARCHS, prefixes=('mobilenetv4_',), extra={
        alias: name for name, spec in ARCHS.items() for alias in (SIZE_WORDS[name], spec.timm_name)})
    net_name: str = 'MobileNetV4'
    default_stem_1x1_act: bool = True

    def __init__(self, arch: str = 'S', out_indices: Optional[Sequence[int]] = None, frozen_stages: int = -1,
                 norm_eval: bool = False, deploy: bool = False, reparam_bn: bool = False,
                 stem_1x1_act: Optional[bool] = None, drop_path_rate: float = 0., norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None, in_channels: int = 3, with_cp: bool = False):
        super().__init__(out_indices, frozen_stages, norm_eval, deploy, init_cfg, with_cp)
        self.arch = self.resolve_arch(arch)
        self.reparam_bn = reparam_bn
        self.stem_1x1_act_given = stem_1x1_act is not None
        self.stem_1x1_act = self.default_stem_1x1_act if stem_1x1_act is None else stem_1x1_act
        specs = self.stage_specs(self.arch)
        stem = ARCHS[self.arch].stem
        self.conv_stem = nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, eps=BN_EPS)
        self.act1 = nn.ReLU(inplace=True)

        n_blocks = sum(map(len, specs))
        prev, stride, idx = stem, 2, 0
        stages, self.feature_info = [], []
        for s, stage_specs in enumerate(specs):
            blocks = []
            for spec in stage_specs:
                dpr = drop_path_rate * idx / n_blocks
                if isinstance(spec, CN):
                    act = self.stem_1x1_act if spec.act is None else spec.act
                    blocks.append(ConvNormAct(prev, spec.out, spec.kernel, spec.stride, act=act))
                elif isinstance(spec, ER):
                    blocks.append(FusedInvertedResidual(prev, spec.out, spec.kernel, spec.stride, spec.exp, dpr))
                else:
                    blocks.append(UniversalInvertedBottleneck(prev, spec.out, spec, reparam_bn, dpr))
                prev, stride, idx = spec.out, stride * spec.stride, idx + 1
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=prev, reduction=stride, module=f'blocks.{s}'))
        # The 960-ch 1x1 conv (blocks.4) exists only when feature 4 is asked for: unused parameters
        # would break DDP and waste optimizer state. Its checkpoint keys are then reported as ignored.
        self.has_final_conv = any(i % len(self.feature_info) == FEATURE_STAGES for i in self.out_indices)
        self.blocks = nn.Sequential(*(stages if self.has_final_conv else stages[:FEATURE_STAGES]))
        if norm_cfg is not None:
            apply_norm_cfg(self, norm_cfg)
        self._finish_init()

    @classmethod
    def stage_specs(cls, arch: str) -> List[list]:
        """The block specs of each stage of variant ``arch`` (RepGhostNetV2 moves depthwise convs)."""
        return [list(s) for s in ARCHS[arch].stages]

    def feature_stages(self) -> List[List[nn.Module]]:
        return [[self.conv_stem, self.bn1, self.act1]] + [[stage] for stage in self.blocks]

    def _forward_stages(self, x: Tensor) -> List[Tensor]:
        """``feature_stages()``'s walk over ``blocks`` itself (TorchScript compiles it)."""
        x = self.act1(self.bn1(self.conv_stem(x)))
        outs: List[Tensor] = []
        for idx, stage in enumerate(self.blocks):
            if idx <= self.out_indices[-1]:
                x = stage(x)
                if idx in self.out_indices:
                    outs.append(x.contiguous())    # NCHW out (see RepBackbone._walk_stages)
        return outs

    def conv_bn_pairs(self) -> List[Tuple[str, str]]:
        return [('conv_stem', 'bn1')]

    # -- checkpoints -----------------------------------------------------------------------------
    def is_head_key(self, key: str) -> bool:
        return (RepBackbone.is_head_key(key) or key.startswith('norm_head.')
                or (not self.has_final_conv and key.startswith(f'blocks.{FEATURE_STAGES}.')))

    @classmethod
    def state_dict_form(cls, state_dict) -> str:
        keys = list(state_dict)
        if 'conv_stem.weight' not in state_dict and 'layers.0.conv.weight' not in state_dict:
            raise ckpt.CheckpointError(
                f'not a {cls.__name__} state dict (timm layout: conv_stem/blocks.*, official RepGhostNetV2 '
                f"layout: layers.*); first keys: {keys[:5]}")
        if any(k.endswith('.running_var') and not k.startswith('norm_head.') for k in keys):
            return 'train'
        if 'conv_stem.bias' in state_dict or 'layers.0.conv.bias' in state_dict:
            return 'deploy'
        raise ckpt.CheckpointError(f'{cls.__name__}: state dict has neither BatchNorm statistics (training '
                                   'form) nor conv biases (fused form)')

    def convert_state_dict(self, state_dict: Dict[str, Tensor], form: str) -> Dict[str, Tensor]:
        if is_official_layout(state_dict):
            self._match_official_structure()
            state_dict = convert_official_state_dict(state_dict, self.arch, self.net_name)
        has_rep_bn = any('.rep_bn.' in k for k in state_dict)
        if has_rep_bn and not self.reparam_bn:
            raise ckpt.CheckpointError(
                f'{type(self).__name__}: the checkpoint has RepGhost BN-only branches (keys ".rep_bn."); '
                'build the model with reparam_bn=True to load it')
        if form == 'train' and self.reparam_bn and not has_rep_bn:
            self._add_zero_rep_bn(state_dict)
        return super().convert_state_dict(state_dict, form)

    def _match_official_structure(self) -> None:
        """The RepGhostNetV2 repository's nets (its MobileNetV4 too) have no activation after the two
        1x1 convs of S's stride-4/8 stages, where timm's MobileNetV4 has ReLU. Its weights in a ReLU
        model compute something else (relative error ~0.9), so: adopt its structure, unless the
        caller asked for ReLU there, which is refused."""
        if self.arch != 'S' or not self.stem_1x1_act:
            return
        if self.stem_1x1_act_given:
            raise ckpt.CheckpointError(
                f'{type(self).__name__}(arch=S, stem_1x1_act=True): the checkpoint is in the RepGhostNetV2 '
                "repository's layout (keys 'layers.*'), whose nets have no activation after the 1x1 convs "
                'blocks.0.1 / blocks.1.1; build the model with stem_1x1_act=False (or leave it unset) to load it')
        for name in ('blocks.0.1', 'blocks.1.1'):
            self.get_submodule(name).act = nn.Identity()
        self.stem_1x1_act = False
        logger.info("%s(arch=S): checkpoint in the RepGhostNetV2 repository's layout: no activation after "
                    'blocks.0.1 / blocks.1.1 (stem_1x1_act=False), as in that repository', type(self).__name__)

    def _add_zero_rep_bn(self, state_dict: Dict[str, Tensor]) -> None:
        """Checkpoints have no BN-only branches: give each weight = bias = 0 (mean 0, var 1), so that the
        branch adds nothing and the loaded model computes exactly the checkpoint's function."""
        added = 0
        for name, module in self.named_modules():
            if isinstance(module, ConvNormAct) and module.rep_bn is not None:
                n = module.rep_bn.num_features
                zeros = torch.zeros(n)
                state_dict.update({f'{name}.rep_bn.weight': zeros, f'{name}.rep_bn.bias': zeros.clone(),
                                   f'{name}.rep_bn.running_mean': zeros.clone(),
                                   f'{name}.rep_bn.running_var': torch.ones(n)})
                added += 1
        logger.info('%s: checkpoint has no BN-only branches; %d initialised to zero', type(self).__name__, added)


# -- official state-dict layout -------------------------------------------------------------------------------
_UIB_PARTS = {'start_dw_': 'dw_start', 'expand_conv': 'pw_exp', 'middle_dw': 'dw_mid', 'proj_conv': 'pw_proj',
              'end_dw': 'dw_end'}


def official_module_map(stages: List[list]) -> Dict[str, str]:
    """Module names of the official RepGhostNetV2 repository (``layers.{i}...``, flat, both of its nets)
    -> this package's (timm's) names, for the given (net-specific) stage specs."""
    names = {'layers.0.conv': 'conv_stem', 'layers.0.bn1': 'bn1'}
    i = 1
    for s, stage in enumerate(stages):
        for b, spec in enumerate(stage):
            ours = f'blocks.{s}.{b}'
            if isinstance(spec, CN):
                names.update({f'layers.{i}.conv': f'{ours}.conv', f'layers.{i}.bn1': f'{ours}.bn1'})
            elif isinstance(spec, ER):   # two official ConvBnAct layers
                names.update({f'layers.{i}.conv': f'{ours}.conv_exp', f'layers.{i}.bn1': f'{ours}.bn1',
                              f'layers.{i + 1}.conv': f'{ours}.conv_pwl', f'layers.{i + 1}.bn1': f'{ours}.bn2'})
                i += 1
            else:
                for part, mine in _UIB_PARTS.items():
                    names.update({f'layers.{i}.{part}.conv': f'{ours}.{mine}.conv',
                                  f'layers.{i}.{part}.bn1': f'{ours}.{mine}.bn'})
            i += 1
    return names


def is_official_layout(state_dict) -> bool:
    return any(k.startswith('layers.0.') for k in state_dict)


def convert_official_state_dict(state_dict: Dict[str, Tensor], arch: str = 'S',
                                net: str = 'RepGhostNetV2') -> Dict[str, Tensor]:
    """Rename an official RepGhostNetV2-repository state dict (its ``RepGhostNetV2`` or
    ``MobileNetV4``, ``net`` says which, variant ``arch``) to this package's timm-style layout.

    Head keys (``conv_head``, ``classifier``) keep their names; keys that match no module of the
    variant are kept as they are (a strict load then reports them as unexpected).
    """
    cls = next((c for name, c in BACKBONES.items() if name.lower() == str(net).lower()), None)
    if cls is None or not issubclass(cls, MobileNetV4):
        raise ValueError(f"net must be 'RepGhostNetV2' or 'MobileNetV4', got {net!r}")
    names = official_module_map(cls.stage_specs(cls.resolve_arch(arch)))
    out = {}
    for key, value in state_dict.items():
        module, _, param = key.rpartition('.')
        out[f'{names[module]}.{param}' if module in names else key] = value
    return out


# -- classifiers -------------------------------------------------------------------------------------
@register_classifier('MobileNetV4')
class MobileNetV4Classifier(OfficialClassifierHead, MobileNetV4):
    """MobileNetV4 conv ImageNet classifier with the official RepGhostNetV2-repository head
    (:class:`OfficialClassifierHead`) on blocks.4; timm ``mobilenetv4_conv_*`` checkpoints (bias-free
    ``conv_head`` + ``norm_head`` BN) load exactly, the BN folded into ``conv_head``."""
    paper_table = PAPER_TABLE

    def __init__(self, arch: str = 'S', num_classes: int = 1000, drop_rate: float = 0.2, deploy: bool = False,
                 reparam_bn: bool = False, init_cfg: Optional[dict] = None, in_channels: int = 3,
                 global_pool: str = 'avg', **kwargs):
        super().__init__(arch, out_indices=(4,), deploy=False, reparam_bn=reparam_bn, init_cfg=init_cfg,
                         in_channels=in_channels, **kwargs)
        self.in_chans = in_channels
        self.init_head(self.feature_info[-1]['num_chs'], num_classes, drop_rate)
        self.finish_classifier(num_classes, deploy, global_pool)

    def drop_stages_after(self, index: int) -> None:
        self.blocks = self.blocks[:index + 1]
        self.has_final_conv = False     # called for an index before the final conv's

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups in depth order (layer-wise decay): stem, stages (``coarse``) or
        blocks, ``conv_head``; the classifier comes last."""
        return dict(stem=r'^conv_stem|bn1', blocks=[
            (r'^blocks\.(\d+)' if coarse else r'^blocks\.(\d+)\.(\d+)', None), (r'^conv_head', (99999,))])

    def convert_state_dict(self, state_dict: Dict[str, Tensor], form: str) -> Dict[str, Tensor]:
        state_dict = super().convert_state_dict(state_dict, form)
        return fold_bn_pairs_in_state_dict(state_dict, [('conv_head', 'norm_head')], eps=BN_EPS)
