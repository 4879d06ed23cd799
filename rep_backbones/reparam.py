"""Re-parameterization algebra shared by every family, and the one rule and primitive for conv -> BN pairs.

Every training-time branch of a re-parameterizable block is a linear map of its input, so it can be
written as a convolution kernel ``W`` of shape ``[C_out, C_in / groups, kh, kw]`` plus a bias ``b`` of
shape ``[C_out]``. Branches that read the same input with the same stride (and centre-aligned
padding) are then merged by summing their kernels after padding them to a common size.

The kernel functions work on tensors. Module surgery is in three places: :func:`make_conv` builds a
replacement conv, :func:`fold_conv_bn` folds one conv -> BN pair in place (the primitive every fusion
walk uses, with the pairs that :func:`conv_bn_pairs` finds), and :func:`reparameterize_tree` is the
backbones' walk. BatchNorm here means any ``torch.nn.modules.batchnorm._BatchNorm`` (BatchNorm2d,
SyncBatchNorm, timm's BatchNormAct2d): in eval mode they all compute
``(x - running_mean) / sqrt(running_var + eps) * weight + bias``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

KernelBias = Tuple[Tensor, Tensor]


def is_norm(module: nn.Module) -> bool:
    """True for every BatchNorm flavour (BN, SyncBN, timm's BatchNormAct2d)."""
    return isinstance(module, _BatchNorm)


def affine_from_stats(mean: Tensor, var: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                      eps: float) -> KernelBias:
    """Per-channel ``(scale, shift)`` of eval-mode BatchNorm from its statistics and affine."""
    std = torch.sqrt(var + eps)
    weight = weight if weight is not None else torch.ones_like(std)
    bias = bias if bias is not None else torch.zeros_like(std)
    scale = weight / std
    return scale, bias - mean * scale


def bn_scale_shift(bn: _BatchNorm) -> KernelBias:
    """Per-channel ``(scale, shift)`` with ``bn(x) == x * scale + shift`` in eval mode."""
    if bn.running_var is None or bn.running_mean is None:
        raise ValueError(f'{type(bn).__name__} without running statistics cannot be folded '
                         '(track_running_stats=False)')
    return affine_from_stats(bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)


def fold_bn(kernel: Tensor, bias: Optional[Tensor], bn: _BatchNorm) -> KernelBias:
    """Fold a BatchNorm that follows a conv ``(kernel, bias)``: returns the equivalent conv."""
    return fold_following_affine(kernel, bias, *bn_scale_shift(bn))


def fold_preceding_affine(kernel: Tensor, bias: Optional[Tensor], scale: Tensor, shift: Tensor,
                          groups: int = 1) -> KernelBias:
    """Fold a per-channel affine ``x * scale + shift`` (``[C_in]``) applied *before* a conv into it.
    Exact where the conv sees no zero padding (1x1, or interior pixels): the padded zeros are not
    shifted, so at borders the caller handles the difference (:class:`BorderCorrectedConv2d`)."""
    c_out, c_in_g = kernel.shape[:2]
    scale_g = scale.reshape(groups, 1, c_in_g)          # input channels of each group
    shift_g = shift.reshape(groups, 1, c_in_g)
    k = kernel.reshape(groups, c_out // groups, c_in_g, *kernel.shape[2:])
    new_kernel = (k * scale_g[..., None, None]).reshape_as(kernel)
    extra = (k.sum(dim=(3, 4)) * shift_g).sum(dim=2).reshape(c_out)
    if bias is None:
        bias = torch.zeros(c_out, dtype=kernel.dtype, device=kernel.device)
    return new_kernel, bias + extra


def pad_kernel(kernel: Tensor, size: Sequence[int]) -> Tensor:
    """Zero-pad a ``[.., kh, kw]`` kernel symmetrically to ``size`` (centres stay aligned)."""
    kh, kw = kernel.shape[-2:]
    th, tw = size
    if (th - kh) % 2 or (tw - kw) % 2 or th < kh or tw < kw:
        raise ValueError(f'cannot centre a {kh}x{kw} kernel in {th}x{tw}')
    pw, ph = (tw - kw) // 2, (th - kh) // 2
    return F.pad(kernel, [pw, pw, ph, ph])


def identity_kernel(channels: int, groups: int, size: Sequence[int] = (1, 1), *,
                    dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Kernel of a conv (``channels`` in = out, ``groups``) that returns its input unchanged."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, *size, dtype=dtype, device=device)
    idx = torch.arange(channels, device=device)
    kernel[idx, idx % per_group, size[0] // 2, size[1] // 2] = 1.0
    return kernel


def bn_branch(bn: _BatchNorm, groups: int, size: Sequence[int] = (1, 1)) -> KernelBias:
    """A BN-only branch (``bn(x)``, input channels = output channels) as a conv."""
    kernel = identity_kernel(bn.num_features, groups, size, dtype=bn.running_mean.dtype,
                             device=bn.running_mean.device)
    return fold_bn(kernel, None, bn)


def conv_bn_branch(conv: nn.Conv2d, bn: Optional[_BatchNorm]) -> KernelBias:
    """``bn(conv(x))`` (or ``conv(x)`` when ``bn`` is None) as one ``(kernel, bias)``."""
    bias = conv.bias
    if bn is None:
        if bias is None:
            bias = torch.zeros(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device)
        return conv.weight, bias
    return fold_bn(conv.weight, bias, bn)


def merge_branches(branches: Iterable[KernelBias]) -> KernelBias:
    """Sum parallel branches (same input, stride, groups) after padding to the largest kernel."""
    branches = list(branches)
    if not branches:
        raise ValueError('merge_branches needs at least one branch')
    kh = max(k.shape[-2] for k, _ in branches)
    kw = max(k.shape[-1] for k, _ in branches)
    kernel = sum(pad_kernel(k, (kh, kw)) for k, _ in branches)
    bias = sum(b for _, b in branches)
    return kernel, bias


def make_conv(template: nn.Conv2d, kernel: Tensor, bias: Tensor) -> nn.Conv2d:
    """A biased ``nn.Conv2d`` with ``template``'s geometry and the given ``kernel``/``bias``.

    Padding is recomputed from the kernel size when the kernel is larger than the template's,
    so that a 1x1 template merged into a 3x3 keeps 'same' output size.
    """
    kh, kw = kernel.shape[-2:]
    th, tw = template.kernel_size
    padding = template.padding
    if (kh, kw) != (th, tw):
        padding = (template.padding[0] + (kh - th) // 2 * template.dilation[0],
                   template.padding[1] + (kw - tw) // 2 * template.dilation[1])
    conv = nn.Conv2d(template.in_channels, template.out_channels, (kh, kw), stride=template.stride,
                     padding=padding, dilation=template.dilation, groups=template.groups, bias=True,
                     padding_mode=template.padding_mode, device=kernel.device, dtype=kernel.dtype)
    with torch.no_grad():
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
    return conv


# -- conv -> BatchNorm pairs: one rule, one in-place fold ----------------------------------------------
PairTable = Mapping[type, Sequence[Tuple[str, str]]]


def is_plain_sequential(module: nn.Module) -> bool:
    """An ``nn.Sequential`` (or subclass) whose forward is the plain chain of its children."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def can_fold_into(layer: nn.Module) -> bool:
    """Whether :func:`fold_bn_into` can absorb a following BatchNorm into ``layer``."""
    return isinstance(layer, (nn.Conv2d, nn.Linear))


def conv_bn_pairs(module: nn.Module, foreign: Optional[PairTable] = None,
                  can_fold: Callable[[nn.Module], bool] = can_fold_into) -> List[Tuple[str, str]]:
    """``(conv, bn)`` submodule names of ``module`` where ``bn`` reads exactly ``conv``'s output (data
    flow, never module order), declared one way:

    * by ``module.conv_bn_pairs()``, where its class defines it (the package's blocks and backbones);
    * else by ``foreign[type(module)]``: an owner's table for classes it does not define (timm blocks);
    * in a plain ``nn.Sequential``: every (``can_fold`` layer, BatchNorm) neighbour.

    Pairs whose BN is already folded (``nn.Identity``) are kept, so that the same names describe a
    state dict in either form; pairs with an absent (``None``) member are left out."""
    own = getattr(module, 'conv_bn_pairs', None)
    if callable(own):
        pairs = list(own())
    else:
        pairs = list((foreign or {}).get(type(module), ()))
    if is_plain_sequential(module):
        kids = list(module.named_children())
        pairs += [(a, b) for (a, conv), (b, bn) in zip(kids[:-1], kids[1:])
                  if can_fold(conv) and (is_norm(bn) or isinstance(bn, nn.Identity))]
    return [(c, b) for c, b in pairs if _child(module, c) is not None and _child(module, b) is not None]


def _child(module: nn.Module, name: str) -> Optional[nn.Module]:
    try:
        return module.get_submodule(name)
    except AttributeError:
        return None


@torch.no_grad()
def fold_affine_into(layer: nn.Module, scale: Tensor, shift: Tensor) -> None:
    """In place: ``layer`` (an ``nn.Conv2d`` of any class, or ``nn.Linear``) becomes
    ``layer(x) * scale + shift`` per output channel; its class stays, a bias is added if it had none."""
    if not can_fold_into(layer):
        raise TypeError(f'cannot fold a BatchNorm into {type(layer).__name__}')
    kernel, bias = fold_following_affine(layer.weight, layer.bias, scale, shift)
    layer.weight = nn.Parameter(kernel.detach().clone())
    layer.bias = nn.Parameter(bias.detach().clone())


def fold_bn_into(layer: nn.Module, bn: _BatchNorm) -> None:
    """In place: ``layer`` becomes ``bn(layer(x))`` (eval mode; :func:`fold_affine_into`)."""
    fold_affine_into(layer, *bn_scale_shift(bn))


def norm_remainder(bn: nn.Module) -> nn.Module:
    """What is left of a folded BatchNorm: timm's norm+act layers keep their dropout and activation
    (same child names, so parameterised activations keep their keys); a plain BN leaves ``nn.Identity``."""
    drop, act = getattr(bn, 'drop', None), getattr(bn, 'act', None)
    if drop is None and act is None:
        return nn.Identity()
    return nn.Sequential(OrderedDict(drop=nn.Identity() if drop is None else drop,
                                     act=nn.Identity() if act is None else act))


@torch.no_grad()
def fold_conv_bn(parent: nn.Module, conv_name: str, bn_name: str,
                 fold: Callable[[nn.Module, nn.Module], None] = fold_bn_into) -> bool:
    """The in-place fold of one pair of :func:`conv_bn_pairs`: the conv absorbs the BN (``fold``), the
    BN becomes :func:`norm_remainder` under its name (keys stay stable). False when already folded."""
    bn = parent.get_submodule(bn_name)
    if not is_norm(bn):
        return False
    fold(parent.get_submodule(conv_name), bn)
    parent.set_submodule(bn_name, norm_remainder(bn).train(bn.training))
    return True


def fold_conv_bn_pairs(module: nn.Module, foreign: Optional[PairTable] = None) -> int:
    """Fold every pair :func:`conv_bn_pairs` finds directly in ``module``; returns how many."""
    return sum(fold_conv_bn(module, conv, bn) for conv, bn in conv_bn_pairs(module, foreign))


@torch.no_grad()
def reparameterize_tree(module: nn.Module, foreign: Optional[PairTable] = None) -> None:
    """Fuse every descendant of ``module`` in place: the one walk every backbone uses.

    For each child, depth first (the order of ``timm.utils.model.reparameterize_model``):
    ``child.fuse()`` *returns* its replacement; ``child.switch_to_deploy()`` (or timm's
    ``reparameterize()``) changes it in place; the walk goes into it; then the child's own conv -> BN
    pairs are folded (:func:`conv_bn_pairs` with ``foreign``, :func:`fold_conv_bn`).
    """
    for name, child in list(module.named_children()):
        if hasattr(child, 'fuse'):
            child = child.fuse()
            setattr(module, name, child)
        elif hasattr(child, 'switch_to_deploy'):
            child.switch_to_deploy()
        elif hasattr(child, 'reparameterize'):
            child.reparameterize()
        reparameterize_tree(child, foreign)
        fold_conv_bn_pairs(child, foreign)


@torch.no_grad()
def fold_bn_pairs_in_state_dict(state_dict: dict, pairs: Iterable[Tuple[str, str]], eps: float = 1e-5) -> dict:
    """The same folding on a state dict (for partially fused official checkpoints): for each pair
    whose BN entries are present, rewrite ``conv.weight``/``conv.bias`` and drop the BN entries."""
    for conv_name, bn_name in pairs:
        mean_key = f'{bn_name}.running_mean'
        if mean_key not in state_dict:
            continue
        scale, shift = affine_from_stats(state_dict.pop(mean_key), state_dict.pop(f'{bn_name}.running_var'),
                                         state_dict.pop(f'{bn_name}.weight', None),
                                         state_dict.pop(f'{bn_name}.bias', None), eps)
        state_dict.pop(f'{bn_name}.num_batches_tracked', None)
        state_dict[f'{conv_name}.weight'], state_dict[f'{conv_name}.bias'] = fold_following_affine(
            state_dict[f'{conv_name}.weight'], state_dict.get(f'{conv_name}.bias'), scale, shift)
    return state_dict


# -- identity-like branches and pre-conv BatchNorm at zero-padded borders ---------------------------

def avg_pool_kernel(channels: int, kernel_size: Sequence[int] = (3, 3), *,
                    dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Depthwise kernel (``groups=channels``) of ``nn.AvgPool2d(kernel_size, stride, padding)``; exact
    only for ``count_include_pad=True`` (PyTorch's default) and ``ceil_mode=False``, where the divisor is
    always ``kh * kw`` (otherwise it depends on the position, which no kernel expresses)."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    return torch.full((channels, 1, kh, kw), 1.0 / (kh * kw), dtype=dtype, device=device)


def tiled_identity_kernel(in_channels: int, repeats: int, size: Sequence[int] = (1, 1), *,
                          dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Dense kernel ``[repeats * in_channels, in_channels, kh, kw]`` of ``cat([x] * repeats, dim=1)``
    (``repeats=1``: plain identity; ``2``: the "add the input to both halves" shortcut of blocks that
    double their channels)."""
    one = identity_kernel(in_channels, 1, size, dtype=dtype, device=device)
    return one.repeat(repeats, 1, 1, 1)


def preceding_shift_taps(kernel: Tensor, shift: Tensor, groups: int = 1) -> Tensor:
    """``[C_out, kh, kw]``: what each kernel tap adds to the output when the conv's input is the
    per-channel constant ``shift`` (a preceding BatchNorm's shift); their sum is the bias
    :func:`fold_preceding_affine` adds, the taps on padding :class:`BorderCorrectedConv2d`'s correction."""
    c_out, c_in_g = kernel.shape[:2]
    k = kernel.reshape(groups, c_out // groups, c_in_g, *kernel.shape[2:])
    taps = (k * shift.reshape(groups, 1, c_in_g, 1, 1)).sum(dim=2)
    return taps.reshape(c_out, *kernel.shape[2:])


def _taps_inside(i: int, n_in: int, k: int, stride: int, pad: int, dilation: int) -> List[bool]:
    """Which of the ``k`` taps of output position ``i`` land inside the input (one dimension)."""
    return [i * stride - pad + u * dilation >= 0 and i * stride - pad + u * dilation < n_in for u in range(k)]


# Typed and closure-free (like the forward that calls it) so that TorchScript compiles it.
def _border_runs(n_in: int, n_out: int, k: int, stride: int, pad: int,
                 dilation: int) -> List[Tuple[int, int, Optional[List[bool]]]]:
    """One spatial dimension of a conv: ``[(start, stop, tap mask or None), ...]`` over output positions.

    Output positions whose taps all land inside the input form one run with mask ``None``; every
    other position (the few at each end) is its own run with a list telling which taps are inside.
    """
    lead = 0
    while lead < n_out and not all(_taps_inside(lead, n_in, k, stride, pad, dilation)):
        lead += 1
    trail = n_out
    while trail > lead and not all(_taps_inside(trail - 1, n_in, k, stride, pad, dilation)):
        trail -= 1
    runs: List[Tuple[int, int, Optional[List[bool]]]] = []
    for i in range(lead):
        runs.append((i, i + 1, _taps_inside(i, n_in, k, stride, pad, dilation)))
    if trail > lead:
        runs.append((lead, trail, None))
    for i in range(trail, n_out):
        runs.append((i, i + 1, _taps_inside(i, n_in, k, stride, pad, dilation)))
    return runs


class BorderCorrectedConv2d(nn.Conv2d):
    """A zero-padded conv that also carries a *preceding* BatchNorm ``x * s + t`` folded into it, exactly.

    The kernel is scaled by ``s`` and the bias raised by ``sum(taps)`` (``border_taps`` =
    :func:`preceding_shift_taps`, ``[C_out, kh, kw]``, saved in the state dict); where the window
    overlaps the padding the original conv read zeros instead of ``t``, so the taps on padding are
    taken off again. That correction depends on the position only and lives in the outer
    ``ceil(padding / stride)`` rows and columns: it is subtracted in place from those border strips
    (``O(C * (H + W))`` work), exact at every pixel for any input size.
    """
    # The eager per-size cache (:meth:`_cached_border_strips`) is a dict TorchScript cannot type.
    __jit_ignored_attributes__ = ['_border_strip_cache']

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != 'zeros' or isinstance(self.padding, str):
            raise ValueError('BorderCorrectedConv2d needs explicit zero padding')
        self.register_buffer('border_taps', torch.zeros(self.out_channels, *self.kernel_size,
                                                        dtype=self.weight.dtype, device=self.weight.device))

    def forward(self, x: Tensor) -> Tensor:
        out = self._conv_forward(x, self.weight, self.bias)    # nn.Conv2d.forward (TorchScript has no super())
        if self.padding[0] == 0 and self.padding[1] == 0:
            return out
        if not torch.jit.is_scripting():    # resolved when compiling: TorchScript builds the strips each call
            if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
                return out - self.deficit_map(x)
            regions, deficit = self._cached_border_strips(x, out)
        else:
            regions, deficit = self.border_strips(x.shape[-2], x.shape[-1], out.shape[-2], out.shape[-1], out.dtype)
        for r in range(len(regions)):
            r0, r1, c0, c1 = regions[r]
            out[:, :, r0:r1, c0:c1] -= deficit[r].reshape(-1, 1, 1)
        return out

    def border_strips(self, h_in: int, w_in: int, h_out: int, w_out: int,
                      dtype: torch.dtype) -> Tuple[List[Tuple[int, int, int, int]], Tensor]:
        """The correction as ``(regions, deficit)``: output regions ``(r0, r1, c0, c1)`` whose windows
        overlap the padding, and ``deficit`` ``[R, C_out]``, the taps on padding summed for each region."""
        rows = _border_runs(h_in, h_out, self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0])
        cols = _border_runs(w_in, w_out, self.kernel_size[1], self.stride[1], self.padding[1], self.dilation[1])
        ones_h, ones_w = [True] * self.kernel_size[0], [True] * self.kernel_size[1]
        regions: List[Tuple[int, int, int, int]] = []
        masks: List[List[List[float]]] = []
        for r0, r1, row_mask in rows:
            for c0, c1, col_mask in cols:
                if row_mask is None and col_mask is None:
                    continue                          # interior: the conv's bias is already right
                mr = ones_h if row_mask is None else row_mask
                mc = ones_w if col_mask is None else col_mask
                regions.append((r0, r1, c0, c1))
                masks.append([[1.0 if a and b else 0.0 for b in mc] for a in mr])
        taps = self.border_taps.to(dtype)
        if len(regions) == 0:
            return regions, taps.new_zeros((0, taps.shape[0]))
        inside = torch.tensor(masks, dtype=taps.dtype, device=taps.device)        # [R, kh, kw]
        return regions, taps.sum(dim=(1, 2)) - torch.einsum('cuv,ruv->rc', taps, inside)  # [R, C_out]

    @torch.jit.unused
    def _cached_border_strips(self, x: Tensor, out: Tensor) -> Tuple[List[Tuple[int, int, int, int]], Tensor]:
        """:meth:`border_strips`, kept per input size (eager only; at most 16 sizes). The key holds
        ``border_taps``' version counter and storage, so a changed or moved buffer is never served stale
        values; built afresh where caching cannot be sound (fake tensors under ``torch.compile`` /
        ``torch.export``, taps made in inference mode, which have no version counter)."""
        taps = self.border_taps
        if torch.compiler.is_compiling() or torch.compiler.is_exporting() or taps.is_inference():
            return self.border_strips(x.shape[-2], x.shape[-1], out.shape[-2], out.shape[-1], out.dtype)
        key = (x.shape[-2], x.shape[-1], out.dtype, out.device, taps._version, taps.data_ptr())
        cache = self.__dict__.setdefault('_border_strip_cache', {})
        if key not in cache:
            if len(cache) >= 16:
                cache.clear()
            with torch.inference_mode(False), torch.no_grad():   # plain tensors, usable outside inference mode
                cache[key] = self.border_strips(x.shape[-2], x.shape[-1], out.shape[-2], out.shape[-1], out.dtype)
        return cache[key]

    def deficit_map(self, x: Tensor) -> Tensor:
        """The whole correction as one tensor ``[1, C_out, H_out, W_out]``: the taps of every padded
        position, found by running the taps over an all-ones image. Used when tracing (ONNX export):
        the in-place strip updates above depend on Python-side shape arithmetic a trace cannot
        record, while this is plain graph ops (constant-folded by onnxruntime for static shapes)."""
        taps = self.border_taps.to(x.dtype)
        ones = x.new_ones((1, 1) + tuple(x.shape[-2:]))
        inside = F.conv2d(ones, taps.unsqueeze(1), None, self.stride, self.padding, self.dilation)
        return taps.sum(dim=(1, 2)).reshape(1, -1, 1, 1) - inside


def make_border_corrected_conv(template: nn.Conv2d, kernel: Tensor, bias: Tensor, taps: Tensor) -> nn.Conv2d:
    """Like :func:`make_conv`, for a conv with a preceding BatchNorm folded in: ``taps`` from
    :func:`preceding_shift_taps` (the BN's shift through the *original* kernel). Without padding the
    folding is exact as is and a plain ``nn.Conv2d`` is returned."""
    if not any(template.padding):
        return make_conv(template, kernel, bias)
    if tuple(kernel.shape[-2:]) != tuple(template.kernel_size) or tuple(taps.shape[-2:]) != tuple(kernel.shape[-2:]):
        raise ValueError('make_border_corrected_conv: kernel, taps and template must have the same size')
    conv = BorderCorrectedConv2d(template.in_channels, template.out_channels, template.kernel_size,
                                 stride=template.stride, padding=template.padding, dilation=template.dilation,
                                 groups=template.groups, bias=True, device=kernel.device, dtype=kernel.dtype)
    with torch.no_grad():
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        conv.border_taps.copy_(taps)
    return conv


@torch.no_grad()
def fuse_bn_conv(bn: _BatchNorm, conv: nn.Conv2d, extra: Optional[KernelBias] = None) -> nn.Conv2d:
    """The conv equal to ``conv(bn(x)) [+ extra branch on x]`` in eval mode, exact at the borders.

    ``extra``: an optional ``(kernel, bias)`` branch reading the same (un-normalized) input with the
    same geometry (identity, average pooling, ...), merged into the kernel; it sees the same zero
    padding, so it needs no border term. Returns :class:`BorderCorrectedConv2d` when the conv pads.
    """
    scale, shift = bn_scale_shift(bn)
    kernel, bias = fold_preceding_affine(conv.weight, conv.bias, scale, shift, groups=conv.groups)
    taps = preceding_shift_taps(conv.weight, shift, groups=conv.groups)
    if extra is not None:
        kernel, bias = merge_branches([(kernel, bias), extra])
        if tuple(kernel.shape[-2:]) != tuple(conv.kernel_size):
            raise ValueError('fuse_bn_conv: the extra branch must not be larger than the conv kernel')
    return make_border_corrected_conv(conv, kernel.detach().clone(), bias.detach().clone(), taps.detach().clone())


# -- kernels of dilated and serial (composed) depthwise convolutions -----------------------------------

def fold_following_affine(kernel: Tensor, bias: Optional[Tensor], scale: Tensor, shift: Tensor) -> KernelBias:
    """Fold a per-channel affine ``y * scale + shift`` (``[C_out]``) applied *after* a conv (or linear
    layer) into it; always exact. :func:`fold_bn` is the BatchNorm case."""
    if bias is None:
        bias = torch.zeros_like(scale)
    return kernel * scale.reshape(-1, *([1] * (kernel.dim() - 1))), bias * scale + shift


def dilate_kernel(kernel: Tensor, dilation: Union[int, Sequence[int]]) -> Tensor:
    """The dense kernel of a dilated conv: ``[.., kh, kw]`` -> ``[.., (kh-1)*dh+1, (kw-1)*dw+1]``
    with zeros between the taps. A conv with the dense kernel, dilation 1 and the same padding
    equals the dilated conv (e.g. 2x2 dilation 2 padding 1 == a 3x3 padding 1 with only corners)."""
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    kh, kw = kernel.shape[-2:]
    out = kernel.new_zeros(*kernel.shape[:-2], (kh - 1) * dh + 1, (kw - 1) * dw + 1)
    out[..., ::dh, ::dw] = kernel
    return out


def compose_depthwise(first: Tensor, second: Tensor, first_bias: Optional[Tensor] = None,
                      second_bias: Optional[Tensor] = None) -> KernelBias:
    """One depthwise conv equal to depthwise conv ``first`` then ``second`` (kernels ``[C, 1, kh, kw]``,
    both "same"-padded): the per-channel full convolution of the kernels, size
    ``(kh1 + kh2 - 1, kw1 + kw2 - 1)``, bias ``second_bias + first_bias * sum(second)``.

    Exact everywhere for a row kernel then a column kernel (or the reverse, or a 1x1) without
    ``first_bias``, also with each conv striding along its own axis: the serial pair zero-pads its
    intermediate map, which the composite never sees, so a ``first_bias`` is exact only away from the
    borders the second kernel crosses (:func:`serial_bias_border_profile` corrects them).
    """
    if first.shape[1] != 1 or second.shape[1] != 1 or first.shape[0] != second.shape[0]:
        raise ValueError(f'compose_depthwise needs depthwise kernels [C, 1, kh, kw] with equal C, got '
                         f'{tuple(first.shape)} and {tuple(second.shape)}')
    channels = first.shape[0]
    kh2, kw2 = second.shape[-2:]
    # full convolution (not correlation) of the two kernels, one channel per group
    padded = F.pad(first.transpose(0, 1), [kw2 - 1, kw2 - 1, kh2 - 1, kh2 - 1])
    kernel = F.conv2d(padded, second.flip(-2, -1), groups=channels).transpose(0, 1)
    bias = torch.zeros(channels, dtype=first.dtype, device=first.device)
    if second_bias is not None:
        bias = bias + second_bias
    if first_bias is not None:
        bias = bias + first_bias * second.sum(dim=(1, 2, 3))
    return kernel, bias


def serial_bias_border_profile(second: Tensor, length: int, padding: Tuple[int, int]) -> Tensor:
    """How a constant per-channel input (a bias of the first conv of a serial pair) reaches the
    output of zero-padded depthwise conv ``second`` ``[C, 1, kh, kw]`` on an input of ``length``
    rows (for an ``k x 1`` kernel) or columns (``1 x k``), relative to the interior value:
    ``[C, length]``, zero except within ``k // 2`` of both ends. Multiply by the first bias and add
    to the composed conv's output to make :func:`compose_depthwise` exact at the borders too."""
    kh, kw = second.shape[-2:]
    if kh != 1 and kw != 1:
        raise ValueError(f'serial_bias_border_profile needs a 1-D kernel, got {kh}x{kw}')
    taps = second.reshape(second.shape[0], 1, -1)                        # [C, 1, k]
    pad = padding[0] if kw == 1 else padding[1]
    ones = second.new_ones(1, second.shape[0], length)
    seen = F.conv1d(ones, taps, padding=pad, groups=second.shape[0])[0]  # [C, length]
    return seen - taps.sum(dim=(1, 2))[:, None]
