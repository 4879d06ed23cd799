"""RepNeXt's token mixers: the multi-branch training forms, and the single-branch convs of level 2
and of the E variants.

* :class:`ChunkConv` (block): channels in 4 chunks -> identity | :class:`RepDWConvS` (-> one DW 3x3) |
  :class:`RepDWConvM` (-> one DW 7x7) | DW 1x11 -> DW 11x1, concatenated. ``fuse_branches`` merges each
  chunk's branches (level 1); ``single_branch_conv`` returns the one DW 11x11 of level 2
  (:class:`SingleBranchDWConv`).
* :class:`CopyConv` (downsample): ``cat(RepDWConvS(x), RepDWConvM(x))`` at stride 2 -> 2C channels;
  level 2 is one DW 7x7 with channel multiplier 2 (:class:`CopyConvSingle`).

Two details keep level 2 exact: the official ``conv_l.0`` has a bias, which the zero padding between
the serial pair hides near the top/bottom borders, so the 11x11 conv carries a ``border`` buffer that
adds that correction (a 1-D conv over ``H``; it vanishes in the interior); and CopyConv concatenates
``[conv_s(x), conv_m(x)]`` whereas a multiplier-2 grouped conv interleaves its outputs, so the converted
conv reorders its channels (``cat_order=True``, a reshape).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..reparam import (
    compose_depthwise,
    conv_bn_branch,
    dilate_kernel,
    fold_following_affine,
    identity_kernel,
    make_conv,
    merge_branches,
    pad_kernel,
    serial_bias_border_profile,
)

# The border profile branches on its kernel's shape and is sized by the input height, which a symbolic
# trace cannot follow: torch.fx (timm's FX tracer included) records it as one call, which TorchScript compiles.
torch.fx.wrap('serial_bias_border_profile')

LARGE_KERNEL = 11       # ChunkConv's conv_l / the single-branch token mixer
DOWN_KERNEL = 7         # CopyConv's conv_m / the single-branch downsample


def _dw(channels: int, kernel, stride=1, padding=0, bias: bool = True, out_channels: Optional[int] = None) -> nn.Conv2d:
    return nn.Conv2d(channels, out_channels or channels, kernel, stride, padding, groups=channels, bias=bias)


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
        ident, small, medium, large = torch.chunk(x, 4, dim=1)
        return torch.cat((self.conv_i(ident), self.conv_s(small), self.conv_m(medium), self.conv_l(large)), dim=1)

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
    def single_branch_conv(self) -> 'SingleBranchDWConv':
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
    def single_branch_conv(self) -> 'CopyConvSingle':
        """Level 2 from the level-1 form: one DW 7x7 with channel multiplier 2, in cat order."""
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


@torch.no_grad()
def fold_affine_into_single_branch(conv: nn.Conv2d, scale: Tensor, shift: Tensor) -> None:
    """In place: a following per-channel affine ``y * scale + shift`` folded into a single-branch token
    mixer (:class:`SingleBranchDWConv` or :class:`CopyConvSingle`; class kept). ``scale`` / ``shift``
    are in the order of the mixer's output (cat order for ``cat_order=True``)."""
    if getattr(conv, 'cat_order', False):       # conv output o is cat channel order[o]
        half = conv.out_channels // 2
        idx = torch.arange(conv.out_channels, device=scale.device)
        order = (idx % 2) * half + idx // 2
        scale, shift = scale[order], shift[order]
    kernel, bias = fold_following_affine(*_weight_bias(conv), scale, shift)
    conv.weight.copy_(kernel)
    conv.bias.copy_(bias)
    if getattr(conv, 'border', None) is not None:
        conv.border.mul_(scale.reshape(-1, 1, 1, 1))
