"""ONNX export of fused models, parity with PyTorch (onnxruntime) and graph operator counts.

Exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript exporter. The dynamo-based
exporter (the default of recent torch) needs the ``onnxscript`` package, which is not a dependency
of this project, and the traced graph of a fused model is plain Conv/Add/Mul/... anyway.
"""
from __future__ import annotations

import collections
import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

import rep_backbones
from rep_backbones.io.atomic import PathLike, atomic_write
from rep_backbones.io.build import (
    NO_CHECKPOINT,
    TensorModeWrapper,
    build_from_spec,
    build_model_from_config,
    is_backbone_spec,
)

from .runtimes import ort_session


def build_for_export(config: str, checkpoint: Optional[str] = None, part: str = 'full',
                     device: str = 'cpu') -> Tuple[nn.Module, nn.Module]:
    """``(model, module_to_export)``, both fused in place and in eval mode.

    ``config`` is an mm config file (the module is a :class:`TensorModeWrapper` of ``part``) or a
    registered backbone as ``NAME[:ARCH]`` (the module is the backbone; its ``checkpoint`` is read
    with ``load_pretrained``). ``checkpoint`` ``None`` / ``'none'`` keeps the random initialisation.
    """
    if is_backbone_spec(config):
        model = build_from_spec(config)
        if checkpoint not in NO_CHECKPOINT:
            model.load_pretrained(checkpoint)
        model = rep_backbones.fuse(model.to(device).eval())
        return model, model
    model = rep_backbones.fuse(build_model_from_config(config, checkpoint, device))
    return model, TensorModeWrapper(model, part).eval()


def _outputs(module: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = module(x)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def export_onnx(module: nn.Module, example: torch.Tensor, path: PathLike, dynamic_batch: bool = False,
                dynamic_size: bool = False, opset: int = 17) -> List[str]:
    """Trace ``module`` (``N x C x H x W`` -> tensor or flat tuple of tensors) on ``example`` into
    ``path``, written atomically; returns the output names (``output0``, ...).

    ``dynamic_batch`` makes axis 0 of the input and of every output symbolic; ``dynamic_size`` makes
    the input's H and W, and every 4-d output's H and W, symbolic.
    """
    module.eval()
    outs = _outputs(module, example)
    output_names = [f'output{i}' for i in range(len(outs))]
    dynamic_axes = None
    if dynamic_batch or dynamic_size:
        dynamic_axes = {'input': {**({0: 'batch'} if dynamic_batch else {}),
                                  **({2: 'height', 3: 'width'} if dynamic_size else {})}}
        for name, out in zip(output_names, outs):
            dynamic_axes[name] = {**({0: 'batch'} if dynamic_batch else {}),
                                  **({2: f'{name}_height', 3: f'{name}_width'}
                                     if dynamic_size and out.dim() == 4 else {})}
    with atomic_write(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=DeprecationWarning)  # "legacy TorchScript-based export"
        torch.onnx.export(module, (example,), tmp, input_names=['input'], output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True,
                          dynamo=False)
    return output_names


def check_onnx(module: nn.Module, path: PathLike, x: torch.Tensor, session=None) -> Tuple[float, float]:
    """Run onnxruntime (``session``, or a new one for ``path``) and ``module`` on ``x``; returns
    ``(max_abs_diff, rel_diff)`` over all outputs, ``rel_diff = max|ort - torch| / max|torch|``.

    Raises ``AssertionError`` when the number or shapes of the outputs differ.
    """
    session = session or ort_session(path)
    ref = _outputs(module, x)
    got = session.run(None, {session.get_inputs()[0].name: x.cpu().numpy()})
    if len(got) != len(ref):
        raise AssertionError(f'onnxruntime returned {len(got)} outputs, PyTorch {len(ref)}')
    max_abs, scale = 0.0, 0.0
    for a, b in zip(ref, got):
        a = a.detach().cpu().numpy()
        if a.shape != b.shape:
            raise AssertionError(f'output shape differs: torch {a.shape} vs onnxruntime {b.shape}')
        if a.size:
            max_abs = max(max_abs, float(np.abs(a - b).max()))
            scale = max(scale, float(np.abs(a).max()))
    return max_abs, max_abs / max(scale, 1e-12)


def onnx_op_counts(path: PathLike) -> Dict[str, int]:
    """Operator type -> number of nodes in the ONNX graph (main graph and subgraphs), most frequent
    first."""
    import onnx
    counts: collections.Counter = collections.Counter()

    def walk(graph) -> None:
        for node in graph.node:
            counts[node.op_type] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)
    walk(onnx.load(str(path)).graph)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def format_op_counts(counts: Dict[str, int]) -> str:
    """``{'Conv': 3, 'Add': 1}`` -> ``'Conv: 3, Add: 1'``."""
    return ', '.join(f'{op}: {n}' for op, n in counts.items())
