"""Turn a training checkpoint into a fused (deploy-form) checkpoint, checked before it lands."""
from __future__ import annotations

import os
from typing import Optional

import torch

from rep_backbones import fuse_with_report
from rep_backbones.checkpoint import read_checkpoint
from rep_backbones.fusion import fold_conv_bn_outside
from rep_backbones.io.atomic import atomic_write
from rep_backbones.io.build import build_model_from_config


def build_deploy_model(config: str, cfg_options: Optional[dict] = None, whole: bool = False):
    """``config``'s model in the structure of a fused checkpoint: backbone built with ``deploy=True``;
    with ``whole`` also the necks' and heads' conv+BN pairs folded (their values come from the file)."""
    model = build_model_from_config(config, None, cfg_options={**(cfg_options or {}), 'model.backbone.deploy': True})
    if whole:
        fold_conv_bn_outside(model)
    return model


def fuse_checkpoint(config: str, src: str, dst: str, cfg_options: Optional[dict] = None, whole: bool = False) -> str:
    """Build ``config``'s model, load ``src`` (mmengine checkpoint), fuse every re-parameterizable
    backbone (``whole``: and every conv+BN pair of necks and heads) and write
    ``{'meta': ..., 'state_dict': fused}`` to ``dst``; returns the fusion summary.

    The file is written to a temporary name first and loaded, strictly, into the same config built
    with ``model.backbone.deploy=True`` (what the ``deploy/`` configs do; ``whole``: see
    :func:`build_deploy_model`); only a file that loads replaces ``dst`` (atomically, see
    :mod:`rep_backbones.io.atomic`).
    """
    model = build_model_from_config(config, src, cfg_options=cfg_options)
    report = fuse_with_report(model, whole=whole)
    source = str(src) if '://' in str(src) else os.path.abspath(src)
    meta = dict(read_checkpoint(src).get('meta') or {}, fused_from=source, fused_whole=whole)
    deploy = build_deploy_model(config, cfg_options, whole)
    with atomic_write(dst) as tmp:
        torch.save({'meta': meta, 'state_dict': model.state_dict()}, tmp)
        deploy.load_state_dict(read_checkpoint(tmp)['state_dict'], strict=True)
    return report.summary()
