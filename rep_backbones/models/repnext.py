"""RepNeXt (Zhao et al., 2024) M0-M5 and the single-branch "E" forms M0E/M1E/M2E, as multi-scale
backbones and as the ImageNet classifier with distillation head.

Module and key names equal the official release (``stem.stem.{0,2}``, ``stages.{i}.downsample``,
``stages.{i}.blocks.{j}.token_mixer.conv_s/conv_m/conv_l``, ``norm``, ``channel_mixer.{0,2}``,
``head.head`` / ``head.head_dist``), so the official ``repnext_m*_distill_300e.pth`` files load as they are.

Two fusion levels (both exact in eval mode, no BatchNorm left):

* **level 1** -- ``switch_to_deploy()`` (what ``rep_backbones.fuse`` and mmdeploy call): every
  RepDWConvS -> one depthwise 3x3, RepDWConvM -> one depthwise 7x7, every ConvNorm -> conv with
  bias, and the standalone ``norm`` BatchNorm that follows each token mixer folded away (it is a
  per-channel linear map). In a block it goes *forward* into the channel mixer's first 1x1 conv and
  the identity chunk of ChunkConv is passed through, as upstream's layout has it -- the faster graph
  (``BLOCK_NORM_FOLDS``); ``block_norm_fold='backward'`` folds it into the token mixer instead (the
  identity chunk becomes a depthwise 1x1 conv ``token_mixer.conv_i``, ``conv_s``/``conv_m``/``conv_l.1``
  absorb their slices). In a downsample (whose residual reads the normalised tensor) the two halves
  always go into ``conv_s``/``conv_m``. The 1x11 -> 11x1 pair ``conv_l`` stays serial (composing it
  would cost 121 instead of 22 weights per channel).
* **level 2** -- single branch (the seed's "channel-wise SRP" / E form): ``single_branch=True`` in
  the constructor (fusion then goes all the way) or ``to_single_branch()`` on a model at any level.
  ChunkConv -> one depthwise 11x11 over all channels (:class:`SingleBranchDWConv`); CopyConv ->
  one depthwise 7x7 stride 2 with channel multiplier 2 (:class:`CopyConvSingle`). Two details keep
  it exact: the official ``conv_l.0`` has a bias, which the zero padding between the serial pair
  hides near the top/bottom borders, so the 11x11 conv carries a ``border`` buffer that adds that
  correction (a 1-D conv over ``H``; zero cost in MACs, it vanishes in the interior); and CopyConv
  concatenates ``[conv_s(x), conv_m(x)]`` whereas a multiplier-2 grouped conv interleaves its
  outputs, so the converted conv reorders its channels (``cat_order=True``, a reshape).

The E variants are their own trainable models with that single-branch structure trained directly
(token mixer = biased depthwise 11x11, downsample = biased depthwise 7x7 multiplier 2, interleaved
as in the seed's CopyConv snippet; no border term, no reorder).
"""
from __future__ import annotations

import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from .. import checkpoint as ckpt
from ..reparam import (bn_scale_shift, compose_depthwise, conv_bn_branch, dilate_kernel, fold_following_affine,
                       fold_preceding_affine, identity_kernel, is_norm, make_conv, merge_branches, pad_kernel,
                       serial_bias_border_profile)
from .base import RepBackbone, apply_norm_cfg, arch_aliases
from .layers import BN_EPS, ClassifierForm
from .zoo import register_backbone, register_classifier

# The border profile branches on its kernel's shape and is sized by the input height, which a symbolic
# trace cannot follow: torch.fx (timm's FX tracer included) records it as one call, which TorchScript compiles.
torch.fx.wrap('serial_bias_border_profile')


class RepNeXtArch(NamedTuple):
    embed_dim: Tuple[int, int, int, int]
    depth: Tuple[int, int, int, int]
    single_branch: bool = False           # E forms: the single-branch structure is the trained one


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
LARGE_KERNEL = 11       # ChunkConv's conv_l / the single-branch token mixer
DOWN_KERNEL = 7         # CopyConv's conv_m / the single-branch downsample


# 'repnext_m3' (also timm-style model names), 'repnext-m3', 'repnextm3'.
ALIASES = arch_aliases(ARCHS, prefixes=('repnext_', 'repnext-', 'repnext'))


def _dw(channels: int, kernel, stride=1, padding=0, bias: bool = True, out_channels: Optional[int] = None) -> nn.Conv2d:
    return nn.Conv2d(channels, out_channels or channels, kernel, stride, padding, groups=channels, bias=bias)


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


def _weight_bias(conv: nn.Conv2d) -> Tuple[Tensor, Tensor]:
    return conv_bn_branch(conv, None)


class RepDWConvS(nn.Module):
    """Small depthwise mixer, one DW 3x3 after fusion: 3x3 + 2x2 dilation 2 (both biased) plus a
    1x3 and a 3x1 conv, parallel with bias at stride 1, serial (1x3 stride (1,2) -> 3x1 stride (2,1))
    without bias at stride 2."""

    def __init__(self, channels: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        serial_bias = stride == 1
        self.conv_3_3 = _dw(channels, 3, stride, 1)
        self.conv_3_w = _dw(channels, (1, 3), (1, stride), (0, 1), bias=serial_bias)
        self.conv_3_h = _dw(channels, (3, 1), (stride, 1), (1, 0), bias=serial_bias)
        self.conv_2_2 = nn.Conv2d(channels, channels, 2, stride, padding=1, dilation=2, groups=channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_3_3(x) + self.conv_2_2(x)
        if self.stride == 1:
            return out + self.conv_3_w(x) + self.conv_3_h(x)
        return out + self.conv_3_h(self.conv_3_w(x))

    def kernel_bias(self) -> Tuple[Tensor, Tensor]:
        k22, b22 = _weight_bias(self.conv_2_2)
        branches = [_weight_bias(self.conv_3_3), (dilate_kernel(k22, 2), b22)]
        if self.stride == 1:
            branches += [_weight_bias(self.conv_3_w), _weight_bias(self.conv_3_h)]
        else:
            branches.append(compose_depthwise(self.conv_3_w.weight, self.conv_3_h.weight))
        return merge_branches(branches)

    def template(self) -> nn.Conv2d:
        return self.conv_3_3


class RepDWConvM(nn.Module):
    """Medium depthwise mixer, one DW 7x7 after fusion: 7x7, 5x3, 3x5 (biased, parallel) plus the
    serial pairs 1x7 -> 7x1 and 1x5 -> 5x1 (no bias)."""

    def __init__(self, channels: int, stride: int = 1):
        super().__init__()
        self.conv_7_7 = _dw(channels, 7, stride, 3)
        self.conv_5_3 = _dw(channels, (5, 3), stride, (2, 1))
        self.conv_3_5 = _dw(channels, (3, 5), stride, (1, 2))
        self.conv_7_w = _dw(channels, (1, 7), (1, stride), (0, 3), bias=False)
        self.conv_7_h = _dw(channels, (7, 1), (stride, 1), (3, 0), bias=False)
        self.conv_5_w = _dw(channels, (1, 5), (1, stride), (0, 2), bias=False)
        self.conv_5_h = _dw(channels, (5, 1), (stride, 1), (2, 0), bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv_7_7(x) + self.conv_5_3(x) + self.conv_3_5(x)
                + self.conv_7_h(self.conv_7_w(x)) + self.conv_5_h(self.conv_5_w(x)))

    def kernel_bias(self) -> Tuple[Tensor, Tensor]:
        return merge_branches([
            _weight_bias(self.conv_7_7), _weight_bias(self.conv_5_3), _weight_bias(self.conv_3_5),
            compose_depthwise(self.conv_7_w.weight, self.conv_7_h.weight),
            compose_depthwise(self.conv_5_w.weight, self.conv_5_h.weight)])

    def template(self) -> nn.Conv2d:
        return self.conv_7_7


def _kernel_bias(mixer: nn.Module) -> Tuple[Tensor, Tensor, nn.Conv2d]:
    """(kernel, bias, geometry template) of a RepDWConv* (training form) or a fused conv."""
    if isinstance(mixer, nn.Conv2d):
        return (*_weight_bias(mixer), mixer)
    return (*mixer.kernel_bias(), mixer.template())


class ChunkConv(nn.Module):
    """Block token mixer: channels split in 4 equal chunks -> identity | RepDWConvS | RepDWConvM |
    DW 1x11 -> DW 11x1 (serial, both biased), concatenated. ``conv_i`` is the identity in the
    training form and at level 1 (norm folded forward); a DW 1x1 conv when the following BatchNorm
    is folded into the mixer (``block_norm_fold='backward'``)."""

    def __init__(self, channels: int):
        super().__init__()
        if channels % 4:
            raise ValueError(f'ChunkConv needs channels divisible by 4, got {channels}')
        hidden = channels // 4
        self.conv_i = nn.Identity()
        self.conv_s = RepDWConvS(hidden)
        self.conv_m = RepDWConvM(hidden)
        self.conv_l = nn.Sequential(_dw(hidden, (1, LARGE_KERNEL), 1, (0, LARGE_KERNEL // 2)),
                                    _dw(hidden, (LARGE_KERNEL, 1), 1, (LARGE_KERNEL // 2, 0)))

    def forward(self, x: Tensor) -> Tensor:
        i, s, m, l = torch.chunk(x, 4, dim=1)
        return torch.cat((self.conv_i(i), self.conv_s(s), self.conv_m(m), self.conv_l(l)), dim=1)

    @torch.no_grad()
    def fuse_branches(self, scale: Optional[Tensor] = None, shift: Optional[Tensor] = None) -> None:
        """Level 1 in place: RepDWConv* -> one conv each. With ``scale``/``shift`` (the per-channel
        affine of the BatchNorm that follows the mixer) that affine is folded into the four chunks
        too, and the identity chunk becomes a DW 1x1 conv ``conv_i``; without, the identity chunk is
        passed through (the official fused layout)."""
        if scale is None:
            for name in ('conv_s', 'conv_m'):
                kernel, bias, template = _kernel_bias(getattr(self, name))
                setattr(self, name, make_conv(template, kernel, bias))
            return
        s_i, s_s, s_m, s_l = scale.chunk(4)
        t_i, t_s, t_m, t_l = shift.chunk(4)
        hidden = s_i.numel()
        if isinstance(self.conv_i, nn.Identity):
            kernel = identity_kernel(hidden, hidden, dtype=scale.dtype, device=scale.device)
            bias = torch.zeros_like(s_i)
            template = _dw(hidden, 1).to(device=scale.device, dtype=scale.dtype)
        else:
            kernel, bias, template = _kernel_bias(self.conv_i)
        self.conv_i = make_conv(template, *fold_following_affine(kernel, bias, s_i, t_i))
        for name, sc, sh in (('conv_s', s_s, t_s), ('conv_m', s_m, t_m)):
            kernel, bias, template = _kernel_bias(getattr(self, name))
            setattr(self, name, make_conv(template, *fold_following_affine(kernel, bias, sc, sh)))
        self.conv_l[1] = make_conv(self.conv_l[1], *fold_following_affine(*_weight_bias(self.conv_l[1]), s_l, t_l))

    @torch.no_grad()
    def single_branch(self) -> 'SingleBranchDWConv':
        """Level 2 from the level-1 form: one DW 11x11 over all channels (+ exact border term)."""
        size = (LARGE_KERNEL, LARGE_KERNEL)
        ref = self.conv_s.weight
        hidden = ref.shape[0]
        identity = (torch.ones(hidden, 1, 1, 1, dtype=ref.dtype, device=ref.device),
                    torch.zeros(hidden, dtype=ref.dtype, device=ref.device))
        pieces = [identity if isinstance(self.conv_i, nn.Identity) else _weight_bias(self.conv_i),
                  _weight_bias(self.conv_s), _weight_bias(self.conv_m)]
        (w1, b1), (w2, b2) = _weight_bias(self.conv_l[0]), _weight_bias(self.conv_l[1])
        pieces.append(compose_depthwise(w1, w2, b1, b2))
        kernel = torch.cat([pad_kernel(k, size) for k, _ in pieces])
        bias = torch.cat([b for _, b in pieces])
        border = torch.zeros(kernel.shape[0], 1, LARGE_KERNEL, 1, dtype=kernel.dtype, device=kernel.device)
        border[-w2.shape[0]:] = w2 * b1.reshape(-1, 1, 1, 1)
        conv = SingleBranchDWConv(kernel.shape[0], LARGE_KERNEL, border=True).to(kernel)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        conv.border.copy_(border)
        return conv


class CopyConv(nn.Module):
    """Downsample token mixer: ``cat(RepDWConvS(x, s2), RepDWConvM(x, s2))`` -> 2C channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_s = RepDWConvS(channels, stride=2)
        self.conv_m = RepDWConvM(channels, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.conv_s(x), self.conv_m(x)), dim=1)

    @torch.no_grad()
    def fuse_branches(self, scale: Optional[Tensor] = None, shift: Optional[Tensor] = None) -> None:
        """Level 1 in place: each RepDWConv* -> one conv, with the following affine folded in if given."""
        affines = zip(scale.chunk(2), shift.chunk(2)) if scale is not None else [(None, None)] * 2
        for name, (sc, sh) in zip(('conv_s', 'conv_m'), affines):
            kernel, bias, template = _kernel_bias(getattr(self, name))
            if sc is not None:
                kernel, bias = fold_following_affine(kernel, bias, sc, sh)
            setattr(self, name, make_conv(template, kernel, bias))

    @torch.no_grad()
    def single_branch(self) -> 'CopyConvSingle':
        (ks, bs), (km, bm) = _weight_bias(self.conv_s), _weight_bias(self.conv_m)
        channels = ks.shape[0]
        kernel = torch.stack((pad_kernel(ks, (DOWN_KERNEL, DOWN_KERNEL)), km), dim=1).reshape(2 * channels, 1,
                                                                                          DOWN_KERNEL, DOWN_KERNEL)
        conv = CopyConvSingle(channels, cat_order=True).to(kernel)
        conv.weight.copy_(kernel)
        conv.bias.copy_(torch.stack((bs, bm), dim=1).reshape(-1))
        return conv


# -- single-branch (level 2 / E) token mixers ------------------------------------------------------------
class SingleBranchDWConv(nn.Conv2d):
    """Biased depthwise ``k x k`` conv, stride 1. With ``border=True`` (converted M models) it also
    holds ``border`` ``[C, 1, k, 1]`` = (bias of ChunkConv's ``conv_l.0``) x (``conv_l.1`` kernel),
    and adds what that bias contributes near the top/bottom edges in the serial form (zero in the
    interior, whose value is already in ``bias``) -- which keeps the conversion exact."""

    def __init__(self, channels: int, kernel_size: int = LARGE_KERNEL, border: bool = False):
        super().__init__(channels, channels, kernel_size, 1, kernel_size // 2, groups=channels, bias=True)
        if border:
            self.register_buffer('border', torch.zeros(channels, 1, kernel_size, 1))
        else:
            self.border = None

    def forward(self, x: Tensor) -> Tensor:
        out = self._conv_forward(x, self.weight, self.bias)    # nn.Conv2d.forward (TorchScript has no super())
        if self.border is not None:
            profile = serial_bias_border_profile(self.border, x.shape[-2], (self.kernel_size[0] // 2, 0))
            out = out + profile[None, :, :, None]
        return out


class CopyConvSingle(nn.Conv2d):
    """Depthwise 7x7 stride 2 with channel multiplier 2 (C -> 2C, biased). Its outputs come
    interleaved (``[s_0, m_0, s_1, m_1, ...]``, the E form); ``cat_order=True`` (converted M models)
    reorders them to ``[s_0 .. s_C-1, m_0 .. m_C-1]`` like the official ``CopyConv``."""

    def __init__(self, channels: int, cat_order: bool = False):
        super().__init__(channels, 2 * channels, DOWN_KERNEL, 2, DOWN_KERNEL // 2, groups=channels, bias=True)
        self.cat_order = cat_order

    def forward(self, x: Tensor) -> Tensor:
        out = self._conv_forward(x, self.weight, self.bias)    # nn.Conv2d.forward (TorchScript has no super())
        if self.cat_order:
            n, c2, h, w = out.shape
            out = out.reshape(n, c2 // 2, 2, h, w).transpose(1, 2).reshape(n, c2, h, w)
        return out


def _fold_into_plain_conv(conv: nn.Conv2d, scale: Tensor, shift: Tensor, ordered=None) -> nn.Conv2d:
    """Fold a following per-channel affine into a single-branch token mixer (keeps its class)."""
    if ordered is not None:                          # affine given in cat order, conv interleaved
        scale, shift = scale[ordered], shift[ordered]
    kernel, bias = fold_following_affine(*_weight_bias(conv), scale, shift)
    with torch.no_grad():
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        if getattr(conv, 'border', None) is not None:
            conv.border.mul_(scale.reshape(-1, 1, 1, 1))
    return conv


def _interleave_index(channels2: int, device=None) -> Tensor:
    """Position in cat order of each output of an interleaved multiplier-2 conv."""
    half = channels2 // 2
    idx = torch.arange(channels2, device=device)
    return (idx % 2) * half + idx // 2


# -- blocks ----------------------------------------------------------------------------------------------
class MetaNeXtBlock(nn.Module):
    """``x + drop_path(channel_mixer(norm(token_mixer(x))))``."""

    def __init__(self, channels: int, mlp_ratio: int = MLP_RATIO, drop_path: float = 0.0,
                 single_branch: bool = False):
        super().__init__()
        self.channels, self.single_branch = channels, single_branch
        self.token_mixer = (SingleBranchDWConv(channels) if single_branch else ChunkConv(channels))
        self.norm = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.channel_mixer = mlp(channels, channels * mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.channel_mixer(self.norm(self.token_mixer(x))))


class Downsample(nn.Module):
    """``x = norm(token_mixer(x)); x + channel_mixer(x)`` with C -> 2C at stride 2."""

    def __init__(self, channels: int, mlp_ratio: int = MLP_RATIO, single_branch: bool = False):
        super().__init__()
        out = 2 * channels
        self.channels, self.single_branch = out, single_branch
        self.token_mixer = CopyConvSingle(channels) if single_branch else CopyConv(channels)
        self.norm = nn.BatchNorm2d(out, eps=BN_EPS)
        self.channel_mixer = mlp(out, out * mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.token_mixer(x))
        return x + self.channel_mixer(x)


# Which side a block's ``norm`` folds into at level 1 (multi-branch blocks; downsamples and single-branch
# mixers always fold it backward into the token mixer). Both are exact. 'forward' -- into the channel
# mixer's first 1x1 conv (no padding), the identity chunk then passed through -- is the faster graph:
# 0.84x (M0) / 0.91x (M3) of 'backward' (the chunk as a DW 1x1 ``conv_i``) in channels-last, 0.96x-1.02x
# in NCHW, at 512x512 on 2 CPU threads (tools/analysis/deploy_layouts.py, docs/benchmarks.md section 3).
# 'backward' keeps the channel mixer's trained weight range, the INT8-friendlier layout (docs/int8.md).
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
    elif isinstance(mixer, CopyConvSingle):
        # with cat_order the BN is indexed in cat order: conv output o is cat channel order[o]
        order = _interleave_index(scale.numel(), scale.device) if mixer.cat_order else None
        _fold_into_plain_conv(mixer, scale, shift, ordered=order)
    else:
        _fold_into_plain_conv(mixer, scale, shift)
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
                 downsample: bool, single_branch: bool):
        super().__init__()
        self.downsample = Downsample(in_chs, single_branch=single_branch) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[MetaNeXtBlock(out_chs, drop_path=drop_paths[j], single_branch=single_branch)
                                      for j in range(depth)])


class RepNeXtStem(nn.Module):
    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.stem = nn.Sequential(ConvNorm(in_chs, out_chs // 2, 3, 2, 1), nn.GELU(),
                                  ConvNorm(out_chs // 2, out_chs, 3, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.stem(x)


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
        single_branch: fusion target. False: ``switch_to_deploy()`` gives level 1 (branches fused,
            no BN); True: level 2 (one DW 11x11 per block, one DW 7x7 x2 per downsample). With
            ``deploy=True`` it selects which fused structure is built (for loading our own fused
            files). See also :meth:`to_single_branch`.
        block_norm_fold: level 1 only: 'forward' (default, the faster graph) folds each block's ``norm``
            into its channel mixer's first 1x1 conv and passes the identity chunk through; 'backward'
            folds it into the token mixer (identity chunk -> DW 1x1 ``conv_i``; INT8-friendlier). See
            ``BLOCK_NORM_FOLDS``. Level 2 always folds backward (into the one 11x11 conv).
        drop_path_rate: stochastic depth, linear over the blocks (not the downsamples); identity in eval.
        norm_cfg: mm-style ``dict(type='BN'|'SyncBN', eps=.., momentum=..)`` for every BatchNorm.
    """
    arch_settings = ARCHS
    arch_aliases = ALIASES

    def __init__(self, arch: str = 'M3', out_indices: Optional[Sequence[int]] = None, frozen_stages: int = -1,
                 norm_eval: bool = False, deploy: bool = False, single_branch: bool = False,
                 block_norm_fold: str = 'forward', drop_path_rate: float = 0.0, norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None, in_channels: int = 3, with_cp: bool = False):
        super().__init__(out_indices, frozen_stages, norm_eval, deploy, init_cfg, with_cp)
        self.arch = self.resolve_arch(arch)
        if block_norm_fold not in BLOCK_NORM_FOLDS:
            raise ValueError(f'block_norm_fold must be one of {BLOCK_NORM_FOLDS}, got {block_norm_fold!r}')
        self.block_norm_fold = block_norm_fold
        spec = ARCHS[self.arch]
        self.single_branch = bool(single_branch or spec.single_branch)
        dims, depths = spec.embed_dim, spec.depth
        self.stem = RepNeXtStem(in_channels, dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, start, stride = [], 0, 4
        self.feature_info = []
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            stages.append(RepNeXtStage(dims[i - 1] if i else dim, dim, depth, rates[start:start + depth],
                                       downsample=i > 0, single_branch=spec.single_branch))
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
        fold = 'backward' if self.single_branch else self.block_norm_fold
        for unit in self._units():
            _fold_norm_into_mixer(unit, fold)
        super()._reparameterize()
        if self.single_branch:
            self._level2()

    @torch.no_grad()
    def _level2(self) -> None:
        for unit in self._units():
            if isinstance(unit.token_mixer, (ChunkConv, CopyConv)):
                unit.token_mixer = unit.token_mixer.single_branch()

    @torch.no_grad()
    def to_single_branch(self) -> 'RepNeXt':
        """Fuse to level 2 (from the training form or from level 1), in place; returns self."""
        self.single_branch = True
        if not self.deploy:
            self.switch_to_deploy()
        else:
            self._level2()
        return self

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
        """The official fused layout (``model.fuse()``, see :func:`official_fuse`) keeps every
        ``norm`` BatchNorm and has no ``conv_i``: each such unit is loaded into modules of that layout
        and its norm folded by the same code as ``switch_to_deploy``."""
        if form == 'deploy':
            official = any(k.endswith('.norm.running_mean') for k in state_dict)     # norms kept
            has_conv_i = any('.token_mixer.conv_i.' in k for k in state_dict)
            if not official and not self.single_branch and has_conv_i != (self.block_norm_fold == 'backward'):
                raise ckpt.CheckpointError(
                    'this fused RepNeXt file was made with block_norm_fold='
                    f"{'backward' if has_conv_i else 'forward'!r} ({'' if has_conv_i else 'no '}token_mixer.conv_i "
                    f"keys); build the model with block_norm_fold={'backward' if has_conv_i else 'forward'!r}")
            for name, unit in self.named_modules():
                if isinstance(unit, (MetaNeXtBlock, Downsample)) and f'{name}.norm.running_mean' in state_dict:
                    _fold_official_unit(state_dict, f'{name}.', unit,
                                        'backward' if self.single_branch else self.block_norm_fold)
        return state_dict


@torch.no_grad()
def official_fuse(module: nn.Module) -> nn.Module:
    """In place, what the official RepNeXt ``model.fuse()`` produces (on any module holding RepNeXt
    parts): branches merged per chunk, ConvNorms and the distillation head fused, the ``norm`` BN
    after each token mixer kept, the identity chunk passed through (no ``conv_i``). Exact; used to
    read official fused files and by the benchmark as the upstream baseline. Returns ``module``."""
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
    twin = (MetaNeXtBlock(unit.channels, single_branch=unit.single_branch) if isinstance(unit, MetaNeXtBlock)
            else Downsample(unit.channels // 2, single_branch=unit.single_branch))
    official_fuse(twin)
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

    def __init__(self, arch: str = 'M0', num_classes: int = 1000, distillation: bool = True,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, deploy: bool = False,
                 single_branch: bool = False, init_cfg: Optional[dict] = None, in_channels: int = 3):
        super().__init__(arch, out_indices=(3,), deploy=False, single_branch=single_branch,
                         drop_path_rate=drop_path_rate, init_cfg=init_cfg, in_channels=in_channels)
        self.drop_rate, self.distillation, self.in_chans = drop_rate, distillation, in_channels
        self.num_features = self.head_hidden_size = self.feature_info[-1]['num_chs']
        self.finish_classifier(num_classes, deploy)

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups in depth order (layer-wise decay), RepViT's: stem, stages
        (``coarse``) or downsample / blocks; the head comes last."""
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else [
            (r'^stages\.(\d+)\.downsample', (0,)), (r'^stages\.(\d+)\.blocks\.(\d+)', None)])

    def forward_head(self, x: Tensor, pre_logits: bool = False):
        x = F.dropout(x.mean((2, 3)), p=self.drop_rate, training=self.training)
        return x if pre_logits else self.head(x)

    def new_classifier(self, num_classes: int) -> nn.Module:
        """The distillation head, or (fused model) the one Linear it fuses to."""
        if self.deploy:
            return nn.Linear(self.head_hidden_size, num_classes)
        return DistillationHead(self.head_hidden_size, num_classes, self.distillation)
