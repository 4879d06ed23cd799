"""``fuse(model)``: the one entry point that turns any model holding our backbones into its
inference form. RepFuseHook, ``tools/fuse_checkpoint.py`` and ONNX export all call it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from torch import nn

from .models.base import RepBackbone


@dataclass
class FuseReport:
    fused: List[str] = field(default_factory=list)          # names of backbones fused now
    already_fused: List[str] = field(default_factory=list)  # built with deploy=True or fused before
    params_before: int = 0
    params_after: int = 0

    def summary(self) -> str:
        if not self.fused:
            what = f'nothing to fuse ({len(self.already_fused)} backbone(s) already in deploy form)'
        else:
            what = f'fused {", ".join(self.fused)}'
        return (f'{what}; parameters {self.params_before:,} -> {self.params_after:,}')


def find_rep_backbones(model: nn.Module) -> List[tuple]:
    """``(name, module)`` of every re-parameterizable backbone inside ``model`` (outermost only)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, RepBackbone) and not any(name.startswith(f'{n}.') for n, _ in found if n):
            found.append((name, module))
    return found


def fuse_with_report(model: nn.Module) -> FuseReport:
    """Fuse every re-parameterizable part of ``model`` in place and say what changed."""
    report = FuseReport(params_before=sum(p.numel() for p in model.parameters()))
    for name, backbone in find_rep_backbones(model):
        label = name or type(backbone).__name__
        if backbone.deploy:
            report.already_fused.append(label)
        else:
            backbone.switch_to_deploy()
            report.fused.append(label)
    report.params_after = sum(p.numel() for p in model.parameters())
    return report


def fuse(model: nn.Module) -> nn.Module:
    """Fuse, in place, every re-parameterizable part of ``model`` (a backbone, a detector, a
    segmentor, any ``nn.Module``) and return it. Fusing a fused model is a no-op.

    Fusion uses BatchNorm running statistics, i.e. the fused model equals the original in
    ``eval()`` mode. Wrapped models (DDP) are unwrapped by ``named_modules`` traversal.
    """
    fuse_with_report(model)
    return model
