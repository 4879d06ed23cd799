#!/usr/bin/env python
"""A randomly initialised mmseg segmentor made to segment without training (an experiment setting: the
segmentation INT8 section of docs/int8.md and tests/test_quantize.py; no trained checkpoint is shipped)."""
from __future__ import annotations

import os
import sys
from typing import List, Sequence

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from int8_family_table import calibrate_bn  # noqa: E402  (tools/analysis/int8_family_table.py)


@torch.no_grad()
def linear_probe_segmentor(model: nn.Module, batches: Sequence[dict], seed: int = 0, ridge: float = 1e-3) -> nn.Module:
    """A randomly initialised mmseg segmentor made to segment, without training (the ``--eval``
    mIoU setting of tests/test_quantize.py and docs/int8.md; no trained checkpoint exists here).

    Every BatchNorm gets :func:`calibrate_bn`'s seeded affine and statistics measured on
    ``batches`` (each as the model's data preprocessor makes it: ``inputs`` and ``data_samples``
    with ``gt_sem_seg``); then the decode head's final 1x1 classifier ``conv_seg`` is fitted by ridge
    regression (``ridge`` x the mean feature energy) of one-hot labels on the features it reads,
    labels taken at the logits' 1/4 resolution (nearest), pixels of the ignore index left out: a
    linear probe on random features. Returns ``model`` in eval mode, still in training form.
    """
    from torch.nn import functional as F

    from rep_backbones.io.build import TensorModeWrapper
    groups: List[List[torch.Tensor]] = []           # BN batches: up to 4 images of one size
    for batch in batches:
        x = batch['inputs']
        if groups and len(groups[-1]) < 4 and groups[-1][0].shape == x.shape:
            groups[-1].append(x)
        else:
            groups.append([x])
    calibrate_bn(TensorModeWrapper(model), [torch.cat(g) for g in groups], seed)
    head = model.decode_head
    conv = head.conv_seg
    seen = []
    hook = conv.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    dim = conv.in_channels + 1
    gram = torch.zeros(dim, dim, dtype=torch.float64)
    moment = torch.zeros(dim, conv.out_channels, dtype=torch.float64)
    try:
        for batch in batches:
            seen.clear()
            model(batch['inputs'], None, mode='tensor')
            f = seen[0]
            label = batch['data_samples'][0].gt_sem_seg.data[None].float()
            label = F.interpolate(label, size=f.shape[-2:], mode='nearest').long().flatten()
            keep = label != head.ignore_index
            x = f[0].flatten(1).T[keep].double()
            x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
            gram += x.T @ x
            moment += x.T @ F.one_hot(label[keep], conv.out_channels).double()
    finally:
        hook.remove()
    gram += ridge * gram.diagonal().mean() * torch.eye(dim, dtype=gram.dtype)
    w = torch.linalg.solve(gram, moment)
    conv.weight.copy_(w[:-1].T.reshape_as(conv.weight).float())
    conv.bias.copy_(w[-1].float())
    return model.eval()
