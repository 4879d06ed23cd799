"""Turn a training checkpoint into a fused (deploy-form) checkpoint, checked before it lands."""
from __future__ import annotations

import os
from typing import Optional

import torch

from rep_backbones import fuse_with_report
from rep_backbones.checkpoint import read_checkpoint

from .atomic import atomic_write
from .build import build_model_from_config


def fuse_checkpoint(config: str, src: str, dst: str, cfg_options: Optional[dict] = None) -> str:
    """Build ``config``'s model, load ``src`` (mmengine checkpoint), fuse every re-parameterizable
    backbone and write ``{'meta': ..., 'state_dict': fused}`` to ``dst``; returns the fusion summary.

    The file is written to a temporary name first and loaded, strictly, into the same config built
    with ``model.backbone.deploy=True`` (what ``configs/deploy/*_deploy.py`` do); only a file that
    loads replaces ``dst`` (atomically, see :mod:`rep_backbones.apis.atomic`).
    """
    model = build_model_from_config(config, src, cfg_options=cfg_options)
    report = fuse_with_report(model)
    meta = dict(read_checkpoint(src).get('meta') or {}, fused_from=os.path.abspath(src))
    deploy = build_model_from_config(config, None, cfg_options={**(cfg_options or {}), 'model.backbone.deploy': True})
    with atomic_write(dst) as tmp:
        torch.save({'meta': meta, 'state_dict': model.state_dict()}, tmp)
        deploy.load_state_dict(read_checkpoint(tmp)['state_dict'], strict=True)
    return report.summary()
