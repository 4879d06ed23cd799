"""How far a deployed network is from the fused PyTorch one: per-output SQNR and max abs error.

SQNR is ``20 log10(|ref| / |ref - test|)`` in dB over all images (onnxruntime's ``qdq_loss_debug``
definition): an fp32 export sits at ~100+ dB, a sound INT8 graph at 20-40 dB, a broken one near 0.
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import nn


def sqnr_db(reference, test) -> float:
    """SQNR of ``test`` against ``reference`` (arrays or lists of arrays); ``inf`` when equal."""
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio
    ref = reference if isinstance(reference, (list, tuple)) else [reference]
    out = test if isinstance(test, (list, tuple)) else [test]
    if all(np.array_equal(a, b) for a, b in zip(ref, out)):
        return math.inf
    return float(compute_signal_to_quantization_noice_ratio(reference, test))


@dataclasses.dataclass
class OutputParity:
    name: str
    shape: Tuple[int, ...]
    sqnr_db: float          # over all evaluated images
    max_abs: float          # max |test - reference|
    max_ref: float          # max |reference|, the scale of max_abs

    def line(self) -> str:
        return (f'{self.name} {self.shape}: SQNR {self.sqnr_db:.1f} dB, max |diff| {self.max_abs:.3g} '
                f'(max |ref| {self.max_ref:.3g})')


def parity(reference, test, inputs: Sequence[np.ndarray]) -> List[OutputParity]:
    """Per output, ``test``'s outputs against ``reference``'s on ``inputs`` (``1 x 3 x H x W`` float32).
    Each side is a session (``run(x) -> [arrays]``) or an ``nn.Module`` (run under ``no_grad``, its tuple
    flattened as the export flattens it). Raises ``AssertionError`` when the outputs differ in number or shape."""
    if not inputs:
        raise ValueError('parity needs at least one input')

    def run(side, x):
        if isinstance(side, nn.Module):
            with torch.no_grad():
                out = side(torch.from_numpy(x))
            return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]
        return side.run(x)
    refs: List[List[np.ndarray]] = []
    tests: List[List[np.ndarray]] = []
    for x in inputs:
        a, b = run(reference, x), run(test, x)
        if len(a) != len(b) or any(u.shape != v.shape for u, v in zip(a, b)):
            raise AssertionError(f'outputs differ: reference {[u.shape for u in a]}, deployed {[v.shape for v in b]}')
        refs.append(a)
        tests.append(b)
    rows = []
    for i in range(len(refs[0])):
        ref, out = [r[i] for r in refs], [t[i] for t in tests]
        rows.append(OutputParity(f'output{i}', tuple(ref[0].shape), sqnr_db(ref, out),
                                 max(float(np.abs(a - b).max()) for a, b in zip(ref, out)),
                                 max(float(np.abs(a).max()) for a in ref)))
    return rows
