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

Exporter. ``torch.onnx.export(..., dynamo=False)``, the TorchScript exporter: the dynamo-based
exporter (the default of recent torch) needs the ``onnxscript`` package, which is not a dependency
of this project, and the traced graph of a fused model is plain Conv/Add/Mul/… anyway.

Check. onnxruntime (CPU) runs the file on the same random input as PyTorch; the largest absolute
difference and the relative difference ``max|ort - torch| / max|torch|`` over all outputs are
printed; the script exits with status 1 when the relative difference exceeds ``--tolerance``.
With ``--dynamic-batch`` / ``--dynamic-size`` a second input (batch 2, a different size) is checked
too. Finally the operator counts of the graph are printed (a fused backbone has zero
``BatchNormalization`` nodes; the script exits with status 2 if any remain in a backbone-only export).
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import rep_backbones  # noqa: E402
from rep_backbones.models import BACKBONES, build_backbone  # noqa: E402


# -- building ----------------------------------------------------------------------------------
def is_backbone_spec(config: str) -> bool:
    return not os.path.exists(config) and config.partition(':')[0] in BACKBONES


def build_for_export(config: str, checkpoint: Optional[str] = None, part: str = 'full',
                     device: str = 'cpu') -> Tuple[nn.Module, nn.Module]:
    """``(full_model, fused_wrapper)``: the built model, fused in place, and the module to export
    (a :class:`TensorModeWrapper` for configs, the backbone itself for ``NAME[:ARCH]``)."""
    if is_backbone_spec(config):
        name, _, arch = config.partition(':')
        model = build_backbone(name, **({'arch': arch} if arch else {}))
        if checkpoint not in (None, '', 'none', 'None', 'NONE'):
            model.load_pretrained(checkpoint)
        model = rep_backbones.fuse(model.to(device).eval())
        return model, model
    from rep_backbones.mm.build import TensorModeWrapper, build_model_from_config
    model = build_model_from_config(config, checkpoint, device)
    rep_backbones.fuse(model)
    return model, TensorModeWrapper(model, part).eval()


# -- export / check ----------------------------------------------------------------------------
def export(module: nn.Module, example: torch.Tensor, path, dynamic_batch: bool = False,
           dynamic_size: bool = False, opset: int = 17) -> List[str]:
    """Trace ``module`` on ``example`` into ``path``; returns the output names."""
    module.eval()
    with torch.no_grad():
        outs = module(example)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    output_names = [f'output{i}' for i in range(len(outs))]
    dynamic_axes = None
    if dynamic_batch or dynamic_size:
        axes = {}
        if dynamic_batch:
            axes[0] = 'batch'
        if dynamic_size:
            axes.update({2: 'height', 3: 'width'})
        dynamic_axes = {'input': dict(axes)}
        for name, out in zip(output_names, outs):
            oaxes = {}
            if dynamic_batch:
                oaxes[0] = 'batch'
            if dynamic_size and out.dim() == 4:
                oaxes.update({2: f'{name}_height', 3: f'{name}_width'})
            dynamic_axes[name] = oaxes
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=DeprecationWarning)  # "legacy TorchScript-based export"
        torch.onnx.export(module, (example,), str(path), input_names=['input'], output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True,
                          dynamo=False)
    return output_names


def ort_session(path, threads: Optional[int] = None):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=['CPUExecutionProvider'])


def compare(module: nn.Module, path, x: torch.Tensor, session=None) -> Tuple[float, float]:
    """``(max_abs_diff, rel_diff)`` of onnxruntime vs PyTorch on ``x`` over all outputs;
    ``rel_diff = max|ort - torch| / max|torch|``."""
    session = session or ort_session(path)
    with torch.no_grad():
        ref = module(x)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    got = session.run(None, {session.get_inputs()[0].name: x.cpu().numpy()})
    if len(got) != len(ref):
        raise AssertionError(f'onnxruntime returned {len(got)} outputs, PyTorch {len(ref)}')
    max_abs, scale = 0.0, 0.0
    for a, b in zip(ref, got):
        a = a.detach().cpu().numpy()
        if a.shape != b.shape:
            raise AssertionError(f'output shape differs: torch {a.shape} vs onnxruntime {b.shape}')
        max_abs = max(max_abs, float(np.abs(a - b).max()) if a.size else 0.0)
        scale = max(scale, float(np.abs(a).max()) if a.size else 0.0)
    return max_abs, max_abs / max(scale, 1e-12)


def op_counts(path) -> Dict[str, int]:
    """Operator type -> number of nodes in the ONNX graph (main graph and subgraphs)."""
    import onnx
    model = onnx.load(str(path))
    counts = collections.Counter()

    def walk(graph):
        for node in graph.node:
            counts[node.op_type] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)
    walk(model.graph)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def format_op_counts(counts: Dict[str, int]) -> str:
    return ', '.join(f'{op}: {n}' for op, n in counts.items())


# -- CLI ---------------------------------------------------------------------------------------
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
    from rep_backbones.mm.build import shape_tuple  # pure helper; no mm import at module level
    h, w = shape_tuple(args.shape)
    part = 'backbone' if args.backbone_only else 'features' if args.features_only else 'full'
    t0 = time.perf_counter()
    model, module = build_for_export(args.config, args.checkpoint, part)
    print(f'built and fused {args.config} ({part}) in {time.perf_counter() - t0:.2f} s')
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch, 3, h, w)
    t0 = time.perf_counter()
    names = export(module, x, args.out, args.dynamic_batch, args.dynamic_size, args.opset)
    print(f'exported {args.out} ({len(names)} outputs, opset {args.opset}) in {time.perf_counter() - t0:.2f} s')

    checks = [x]
    if args.dynamic_batch or args.dynamic_size:
        checks.append(torch.randn(args.batch + 1 if args.dynamic_batch else args.batch, 3,
                                  h + 32 if args.dynamic_size else h, w + 64 if args.dynamic_size else w))
    session = ort_session(args.out)
    worst = 0.0
    for inp in checks:
        max_abs, rel = compare(module, args.out, inp, session)
        worst = max(worst, rel)
        print(f'onnxruntime vs PyTorch on {tuple(inp.shape)}: max |diff| {max_abs:.3g}, '
              f'relative {rel:.3g} (tolerance {args.tolerance:g})')
    counts = op_counts(args.out)
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
