"""Upstream-style fused forms: what the official converters of RepGhostNet and RepNeXt produce,
built from this package's own modules (no official code), to benchmark ``rep_backbones.fuse``
against like with like.

* **RepGhostNet** -- the official ``convert_to_deploy`` (and timm's port of it) folds only the BN
  branch of every RepGhost module into its depthwise conv (``cheap_operation``); every other conv +
  BN pair (stem, primary convs, strided depthwise convs, shortcut convs, the final 1x1 conv) stays
  as it is: 48 BatchNorms are left in the 1.0x classifier. The folding is timm's own
  ``RepGhostModule.switch_to_deploy`` -- the blocks here *are* timm's modules.
* **RepNeXt** -- the official ``fuse()`` merges the multi-kernel branches of each RepDWConvS
  (-> one depthwise 3x3) and RepDWConvM (-> one depthwise 7x7) and every ConvNorm (-> biased conv),
  but keeps the standalone ``norm`` BatchNorm after each token mixer (17 in M0), the identity
  chunk passed through as it is (no ``conv_i``), and the serial 1x11 -> 11x1 pair ``conv_l``.
  Built here with :mod:`rep_backbones.reparam` (no dependence on the models' fusion methods).

RepGhostNetV2, MobileNetV4, RepMobile and the RepNeXt E variants have no official converter:
:func:`upstream_fused` refuses them (:class:`NoUpstreamForm`).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..reparam import compose_depthwise, conv_bn_branch, dilate_kernel, fuse_conv_bn, make_conv, merge_branches

__all__ = ['NoUpstreamForm', 'upstream_family', 'upstream_fused']


class NoUpstreamForm(ValueError):
    """The model's family has no official (upstream) fusion to imitate."""


def upstream_family(model: nn.Module) -> str:
    """``'RepGhostNet'`` or ``'RepNeXt'``: which upstream converter applies to this backbone
    (or classifier); raises :class:`NoUpstreamForm` otherwise."""
    from ..models.repghostnet import RepGhostNet
    from ..models.repnext import RepNeXt
    if getattr(model, 'deploy', False):
        raise NoUpstreamForm(f'{type(model).__name__} is already fused (deploy=True); the upstream-style '
                             'form is made from the training form')
    if isinstance(model, RepGhostNet):
        return 'RepGhostNet'
    if isinstance(model, RepNeXt):
        from ..models.repnext import RepDWConvS
        if not any(isinstance(m, RepDWConvS) for m in model.modules()):
            raise NoUpstreamForm(f'RepNeXt {getattr(model, "arch", "")}: no multi-branch token mixers (the '
                                 'single-branch E variants have no official fusion)')
        return 'RepNeXt'
    raise NoUpstreamForm(f'{type(model).__name__} has no upstream fusion to imitate (only RepGhostNet and '
                         'RepNeXt ship an official converter)')


@torch.no_grad()
def upstream_fused(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (a RepGhostNet / RepNeXt backbone or classifier, training form)
    fused the way the family's official converter does; ``model`` itself is not changed.
    Equal to ``model`` in eval mode (the folding uses the BN running statistics)."""
    family = upstream_family(model)
    out = copy.deepcopy(model)
    if family == 'RepGhostNet':
        _repghost_upstream(out)
    else:
        _repnext_upstream(out)
    return out


def _repghost_upstream(model: nn.Module) -> None:
    """timm's (= the official) RepGhost converter on every RepGhost module, nothing else."""
    from timm.models.repghost import RepGhostModule
    modules = [m for m in model.modules() if isinstance(m, RepGhostModule)]
    if not modules:
        raise NoUpstreamForm(f'{type(model).__name__}: no timm RepGhostModule found to convert')
    for module in modules:
        module.switch_to_deploy()


def _repnext_upstream(model: nn.Module) -> None:
    """Official ``fuse()`` layout: ConvNorm -> conv, RepDWConvS -> DW 3x3, RepDWConvM -> DW 7x7."""
    from ..models.repnext import ConvNorm, RepDWConvM, RepDWConvS
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ConvNorm):
                setattr(parent, name, fuse_conv_bn(child.conv, child.norm))
            elif isinstance(child, RepDWConvS):
                setattr(parent, name, make_conv(child.conv_3_3, *_rep_dw_s_kernel(child)))
            elif isinstance(child, RepDWConvM):
                setattr(parent, name, make_conv(child.conv_7_7, *_rep_dw_m_kernel(child)))


def _plain(conv: nn.Conv2d):
    return conv_bn_branch(conv, None)


def _rep_dw_s_kernel(mod: nn.Module):
    """RepDWConvS as one DW 3x3: 3x3 + (2x2 dilation 2 as a sparse 3x3) + 1x3 and 3x1, which are
    parallel at stride 1 and serial (no bias, composed into one 3x3) at stride 2."""
    k22, b22 = _plain(mod.conv_2_2)
    branches = [_plain(mod.conv_3_3), (dilate_kernel(k22, mod.conv_2_2.dilation), b22)]
    if mod.conv_3_3.stride == (1, 1):
        branches += [_plain(mod.conv_3_w), _plain(mod.conv_3_h)]
    else:
        branches.append(compose_depthwise(mod.conv_3_w.weight, mod.conv_3_h.weight))
    return [t.detach().clone() for t in merge_branches(branches)]


def _rep_dw_m_kernel(mod: nn.Module):
    """RepDWConvM as one DW 7x7: 7x7 + 5x3 + 3x5 + the serial (bias-free) 1x7->7x1 and 1x5->5x1."""
    return [t.detach().clone() for t in merge_branches([
        _plain(mod.conv_7_7), _plain(mod.conv_5_3), _plain(mod.conv_3_5),
        compose_depthwise(mod.conv_7_w.weight, mod.conv_7_h.weight),
        compose_depthwise(mod.conv_5_w.weight, mod.conv_5_h.weight)])]
