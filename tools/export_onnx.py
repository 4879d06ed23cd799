#!/usr/bin/env python
"""Export a fused model to ONNX, check it with onnxruntime, and list the graph's operators.

    python tools/export_onnx.py CONFIG CHECKPOINT --out model.onnx [--shape H W]
        [--backbone-only | --features-only] [--dynamic-batch] [--dynamic-size]
        [--tolerance 1e-4] [--opset 17] [--batch 1]

CONFIG is an mmdet / mmseg config (``custom_imports`` of rep_backbones or not: the package is
imported here), or a bare backbone given as ``NAME[:ARCH]`` (a name registered in
``rep_backbones.models.BACKBONES``, e.g. ``RepGhostNet:1.0x``). CHECKPOINT is a file for mmengine's
``load_checkpoint`` (a bare backbone uses ``load_pretrained``), or ``none`` to keep the random
initialisation — for smoke tests only: the graph is right, the numbers are meaningless.

What is exported. The model is built in eval mode and fused with ``rep_backbones.fuse`` (every
re-parameterizable backbone, no BatchNorm left in it). Then

* default: the whole detector / segmentor in mmdet/mmseg *tensor mode* (``forward(x,
  mode='tensor')``): backbone + neck + head, raw outputs. For a single-stage detector these are the
  per-level classification scores then box regressions (RetinaNet: 5 + 5 tensors); for a segmentor
  the decode-head logits (1/4 resolution, before resizing). Detection post-processing — anchor
  generation, box decoding, score threshold, NMS, rescaling — stays in Python
  (``model.bbox_head.predict_by_feat``), as do the data preprocessor's normalisation and padding:
  the ONNX input is the normalised batch. Two-stage detectors (Mask R-CNN) have no plain-tensor
  full graph (their RoI stage needs proposals from NMS); use ``--features-only``.
* ``--features-only``: backbone + neck (``extract_feat``).
* ``--backbone-only``: the backbone's feature maps.

Exporter: ``torch.onnx.export(..., dynamo=False)`` (see ``rep_backbones/deploy/export.py``); the
file is written atomically (complete or not at all).

Check. onnxruntime (CPU) runs the file on the same random input as PyTorch; the largest absolute
difference and the relative difference ``max|ort - torch| / max|torch|`` over all outputs are
printed; the script exits with status 1 when the relative difference exceeds ``--tolerance``.
With ``--dynamic-batch`` / ``--dynamic-size`` a second input (batch 2, a different size) is checked
too. Finally the operator counts of the graph are printed (a fused backbone has zero
``BatchNormalization`` nodes; the script exits with status 2 if any remain in a backbone-only export).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

import torch

from rep_backbones.deploy.export import build_for_export, check_onnx, export_onnx, format_op_counts, onnx_op_counts
from rep_backbones.deploy.runtimes import ort_session
from rep_backbones.io.build import shape_tuple


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('config', help='mm config file, or a registered backbone as NAME[:ARCH]')
    parser.add_argument('checkpoint', help="checkpoint file, or 'none' (random init, smoke tests only)")
    parser.add_argument('--out', required=True, help='ONNX file to write')
    part = parser.add_mutually_exclusive_group()
    part.add_argument('--backbone-only', action='store_true', help='export the backbone only')
    part.add_argument('--features-only', action='store_true', help='export backbone + neck (extract_feat)')
    parser.add_argument('--shape', type=int, nargs='+', default=[512, 512], metavar=('H', 'W'),
                        help='input height and width (default 512 512)')
    parser.add_argument('--batch', type=int, default=1, help='batch size of the traced input')
    parser.add_argument('--dynamic-batch', action='store_true', help='make the batch axis dynamic')
    parser.add_argument('--dynamic-size', action='store_true', help='make height and width dynamic')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest accepted max|ort - torch| / max|torch| (default 1e-4)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    h, w = shape_tuple(args.shape)
    part = 'backbone' if args.backbone_only else 'features' if args.features_only else 'full'
    t0 = time.perf_counter()
    _, module = build_for_export(args.config, args.checkpoint, part)
    print(f'built and fused {args.config} ({part}) in {time.perf_counter() - t0:.2f} s')
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch, 3, h, w)
    t0 = time.perf_counter()
    names = export_onnx(module, x, args.out, args.dynamic_batch, args.dynamic_size, args.opset)
    print(f'exported {args.out} ({len(names)} outputs, opset {args.opset}) in {time.perf_counter() - t0:.2f} s')

    checks = [x]
    if args.dynamic_batch or args.dynamic_size:
        checks.append(torch.randn(args.batch + 1 if args.dynamic_batch else args.batch, 3,
                                  h + 32 if args.dynamic_size else h, w + 64 if args.dynamic_size else w))
    session = ort_session(args.out)
    worst = 0.0
    for inp in checks:
        max_abs, rel = check_onnx(module, args.out, inp, session)
        worst = max(worst, rel)
        print(f'onnxruntime vs PyTorch on {tuple(inp.shape)}: max |diff| {max_abs:.3g}, '
              f'relative {rel:.3g} (tolerance {args.tolerance:g})')
    counts = onnx_op_counts(args.out)
    print(f'operators ({sum(counts.values())} nodes): {format_op_counts(counts)}')
    n_bn = counts.get('BatchNormalization', 0)
    print(f'BatchNormalization nodes: {n_bn}')
    if worst > args.tolerance:
        print(f'FAILED: relative difference {worst:.3g} > tolerance {args.tolerance:g}', file=sys.stderr)
        return 1
    if part == 'backbone' and n_bn:
        print(f'FAILED: {n_bn} BatchNormalization node(s) left in a fused backbone', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
