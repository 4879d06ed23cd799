"""``fuse(model)``: the one entry point that turns any model holding our backbones into its
inference form. RepFuseHook, ``tools/fuse_checkpoint.py`` and ONNX export all call it.

``whole=True`` also folds the conv+BN pairs of the rest of the model (necks and heads that use BN or
SyncBN, as several official configs do), found structurally, never by module order, by the rule of
the backbones' own walk (:func:`~rep_backbones.reparam.conv_bn_pairs`: ``Conv2d -> BatchNorm`` /
``Linear -> BatchNorm1d`` neighbours in a plain ``nn.Sequential``) plus mmcv's ``ConvModule`` whose
``order`` starts with ``('conv', 'norm')``: its BN reads exactly the conv's output. Each pair is
folded in place (:func:`~rep_backbones.reparam.fold_conv_bn`), the BN left as ``nn.Identity``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import List

import torch
from torch import nn

from .models.base import NoOfficialForm, RepBackbone
from .reparam import conv_bn_pairs, fold_conv_bn, is_norm


@dataclass
class FuseReport:
    fused: List[str] = field(default_factory=list)          # names of backbones fused now
    already_fused: List[str] = field(default_factory=list)  # built with deploy=True or fused before
    params_before: int = 0
    params_after: int = 0
    folded_outside: int = 0                                 # whole=True: conv+BN pairs folded in necks/heads
    norms_left: List[str] = field(default_factory=list)     # BatchNorms still in the model, by name

    def summary(self) -> str:
        if not self.fused:
            what = f'nothing to fuse ({len(self.already_fused)} backbone(s) already in deploy form)'
        else:
            what = f'fused {", ".join(self.fused)}'
        outside = f'; {self.folded_outside} conv+BN pairs folded outside the backbones' if self.folded_outside else ''
        left = f'; {len(self.norms_left)} BatchNorm left' if self.norms_left else '; no BatchNorm left'
        return f'{what}{outside}; parameters {self.params_before:,} -> {self.params_after:,}{left}'



def find_rep_backbones(model: nn.Module) -> List[tuple]:
    """``(name, module)`` of every re-parameterizable backbone inside ``model`` (outermost only)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, RepBackbone) and not any(name.startswith(f'{n}.') for n, _ in found if n):
            found.append((name, module))
    return found


def fuse_with_report(model: nn.Module, whole: bool = False) -> FuseReport:
    """Fuse every re-parameterizable part of ``model`` in place (and with ``whole`` every conv+BN
    pair outside the backbones) and say what changed."""
    report = FuseReport(params_before=sum(p.numel() for p in model.parameters()))
    backbones = find_rep_backbones(model)
    for name, backbone in backbones:
        label = name or type(backbone).__name__
        if backbone.deploy:
            report.already_fused.append(label)
        else:
            backbone.switch_to_deploy()
            report.fused.append(label)
    if whole:
        report.folded_outside = fold_conv_bn_outside(model, {id(b) for _, b in backbones})
    report.params_after = sum(p.numel() for p in model.parameters())
    report.norms_left = [name for name, m in model.named_modules() if is_norm(m)]
    return report


def fold_conv_bn_outside(model: nn.Module, skip_ids=frozenset()) -> int:
    """Fold the conv+BN pairs of ``model`` outside the modules in ``skip_ids`` (see the module
    docstring for which pairs); returns how many were folded."""
    folded = 0

    def visit(module: nn.Module) -> None:
        nonlocal folded
        if id(module) in skip_ids:
            return
        pairs = conv_bn_pairs(module) + conv_module_pair(module)
        folded += sum(fold_conv_bn(module, conv, bn) for conv, bn in pairs)
        for child in module.children():
            visit(child)

    visit(model)
    return folded


def conv_module_pair(module: nn.Module) -> List[tuple]:
    """``[('conv', norm_name)]`` for an mmcv ``ConvModule`` that applies its BatchNorm right after its conv."""
    norm_name = getattr(module, 'norm_name', None)
    if (isinstance(getattr(module, 'conv', None), nn.Conv2d) and norm_name and is_norm(getattr(module, norm_name, None))
            and tuple(getattr(module, 'order', None) or ())[:2] == ('conv', 'norm')):
        return [('conv', norm_name)]
    return []


def fuse(model: nn.Module, whole: bool = False) -> nn.Module:
    """Fuse, in place, every re-parameterizable part of ``model`` (a backbone, a detector, a
    segmentor, any ``nn.Module``) and return it. Fusing a fused model is a no-op.
    ``whole=True`` also folds every conv+BN pair of necks and heads (module docstring).

    Fusion uses BatchNorm running statistics, i.e. the fused model equals the original in
    ``eval()`` mode. Wrapped models (DDP) are unwrapped by ``named_modules`` traversal.
    """
    fuse_with_report(model, whole)
    return model


@torch.no_grad()
def official_fused(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (a backbone or classifier in training form) fused the way its family's
    official converter does (``model.to_official_form()``): what official fused files hold, the
    baseline the benchmark compares ``fuse`` with. ``model`` is not changed. Raises
    :class:`NoOfficialForm` for families without an official converter and for fused models."""
    if not isinstance(model, RepBackbone):
        raise NoOfficialForm(f'{type(model).__name__} is not a re-parameterizable backbone: no official fusion')
    if model.deploy:
        raise NoOfficialForm(f'{type(model).__name__} is already fused (deploy=True); the official-style form '
                             'is made from the training form')
    return copy.deepcopy(model).to_official_form()
