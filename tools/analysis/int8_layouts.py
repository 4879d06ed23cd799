#!/usr/bin/env python
"""Exact fused layouts studied for INT8 beside the ones the library ships.

The library's INT8 layout of each family is its backbone's ``to_int8_layout()`` (RepMobile
``identity-split``, RepNeXt ``single-branch``). The INT8 family table (docs/int8.md) compares them with
the alternatives built here, which measured worse and so stay studies:

* ``norm-forward`` (RepNeXt, :func:`repnext_norm_forward`): each block's norm folded forward into the
  channel mixer's first 1x1 conv before fusing, so the token-mixer kernels keep their trained range;
* ``identity-split`` for RepGhostNet (:func:`identity_split`): the BN-only branch of each RepGhost
  module kept as ``dw_conv(x) + s * x`` instead of in the kernel's centre tap.

:func:`fused_layouts` builds every exact layout of a (BN-calibrated, training-form) backbone.

    python tools/analysis/int8_layouts.py RepNeXt:M0 RepMobile:S     # max |layout - default| of each
"""
import argparse
import copy
from typing import Dict, Optional

import torch
from timm.models.repghost import RepGhostModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import rep_backbones
from rep_backbones.models.repmobile import RepMobileBlock, SplitShortcut
from rep_backbones.models.repnext import MetaNeXtBlock, RepNeXt
from rep_backbones.reparam import bn_scale_shift


@torch.no_grad()
def repnext_norm_forward(model: nn.Module) -> nn.Module:
    """In place, on the training form (exact): every ``MetaNeXtBlock``'s norm folded forward into the
    channel mixer's first 1x1 ConvNorm. ``norm(t) = s * t + b`` feeds only that conv (no padding), so
    ``W' = W * s`` and ``W @ b`` moves into the ConvNorm's running mean; the norm becomes an exact
    identity. Downsamples are left as they are (their residual reads the normalised tensor)."""
    for block in model.modules():
        if not isinstance(block, MetaNeXtBlock) or not isinstance(block.norm, _BatchNorm):
            continue
        scale, shift = bn_scale_shift(block.norm)
        first = block.channel_mixer[0]
        weight = first.conv.weight
        first.norm.running_mean.sub_(weight.flatten(1) @ shift)
        weight.mul_(scale.view(1, -1, 1, 1))
        block.norm.weight.fill_(1.0)
        block.norm.bias.zero_()
        block.norm.running_mean.zero_()
        block.norm.running_var.fill_(1.0)
        block.norm.eps = 0.0
    return model


@torch.no_grad()
def identity_split(model: nn.Module) -> Optional[nn.Module]:
    """Fused copy of a training-form ``model`` whose identity shortcuts stay outside the kernels
    (exact): RepGhost modules keep their BN-only branch as ``dw_conv(x) + s * x``, RepMobile blocks
    their ``[I; I]`` shortcut (:meth:`RepMobileBlock.split_identity`). ``None`` when it has neither."""
    trained = dict(model.named_modules())
    fused = rep_backbones.fuse(copy.deepcopy(model).eval())
    split = 0
    for name, module in fused.named_modules():
        if isinstance(module, RepGhostModule) and len(trained[name].fusion_bn):
            scale, _ = bn_scale_shift(trained[name].fusion_bn[0])      # its shift stays in the bias
            conv = module.cheap_operation
            kh, kw = conv.kernel_size
            conv.weight[:, 0, kh // 2, kw // 2] -= scale
            module.cheap_operation = SplitShortcut(conv, scale)
            split += 1
        elif isinstance(module, RepMobileBlock):
            module.split_identity()
            split += 1
    return fused if split else None


def fused_layouts(model: nn.Module) -> Dict[str, nn.Module]:
    """Every exact fused layout of a (BN-calibrated, training-form) backbone, each a fused deep copy in
    eval mode: ``default`` (``rep_backbones.fuse``); RepNeXt M ``single-branch``; RepNeXt
    ``norm-forward``; RepGhostNet and RepMobile ``identity-split``."""
    layouts = {'default': rep_backbones.fuse(copy.deepcopy(model).eval())}
    if isinstance(model, RepNeXt):
        if model.fusion_level == 1:
            layouts['single-branch'] = copy.deepcopy(model).eval().to_single_branch()
        layouts['norm-forward'] = rep_backbones.fuse(repnext_norm_forward(copy.deepcopy(model)).eval())
    split = identity_split(model)
    if split is not None:
        layouts['identity-split'] = split
    return layouts


def main() -> None:
    from int8_family_table import calibrate_bn  # tools/analysis/int8_family_table.py (this folder)

    from rep_backbones.io.build import build_from_spec
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('specs', nargs='+', help="backbones as 'Family:variant'")
    parser.add_argument('--shape', type=int, nargs=2, default=(128, 160))
    args = parser.parse_args()
    x = torch.randn(2, 3, *args.shape)
    for spec in args.specs:
        torch.manual_seed(0)
        model = calibrate_bn(build_from_spec(spec), [x]).eval()
        layouts = fused_layouts(model)
        with torch.no_grad():
            ref = layouts['default'](x)
            for name, module in layouts.items():
                diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(module(x), ref))
                print(f'{spec:20s} {name:15s} max |out - default| / max |default| = {diff:.1e}')


if __name__ == '__main__':
    main()
