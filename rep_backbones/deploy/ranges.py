"""Where an INT8 QDQ graph loses: every quantized weight and activation, its float range, channel spread and
SQNR, worst first (onnxruntime's ``qdq_loss_debug``; ``tools/quantize_onnx.py --range-report``)."""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from typing import List, Sequence

import numpy as np

from rep_backbones.io.atomic import PathLike

from .quantize import _quiet_root_logger, prepare_for_quantization
from .verify import sqnr_db


@dataclasses.dataclass
class RangeRow:
    kind: str               # 'weight' or 'activation'
    tensor: str             # ONNX tensor name (weights keep the PyTorch parameter names)
    low: float              # float range over the report images
    high: float
    spread: float           # largest channel max|x| / median channel max|x| (per-tensor scale's problem)
    sqnr_db: float          # SQNR of this one quantize-dequantize step
    accumulated_db: float   # activations: SQNR of the INT8 graph's tensor vs the fp32 graph's (all error so far)

    def line(self) -> str:
        acc = '' if math.isnan(self.accumulated_db) else f'{self.accumulated_db:6.1f} dB'
        return (f'{self.kind:10s} {self.sqnr_db:6.1f} dB {acc:>9s}  [{self.low:9.3g}, {self.high:9.3g}]  '
                f'spread {self.spread:7.3g}  {self.tensor}')


def _channel_spread(x: np.ndarray, axis: int) -> float:
    """Largest channel max|x| / median channel max|x| over the channels that are not all zero
    (dead ReLU channels would make the median 0)."""
    peaks = np.abs(np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)).max(axis=1)
    peaks = peaks[peaks > 0]
    return float(peaks.max() / np.median(peaks)) if peaks.size else 1.0


def range_report(fp32_path: PathLike, int8_path: PathLike, inputs: Sequence[np.ndarray]) -> List[RangeRow]:
    """Every quantized weight and activation of the QDQ graph, worst SQNR first.

    Weights: SQNR of the stored int8 values against the float weights; ``spread`` over output
    channels (per-channel scales absorb it). Activations (on ``inputs``): SQNR of the tensor's own
    QuantizeLinear -> DequantizeLinear pair in the INT8 graph (its error alone), float range,
    ``spread`` over channels (one scale per tensor, so a few wide channels leave the others few
    levels), and ``accumulated_db``: the INT8 graph's tensor against the fp32 graph's (all error that
    reached it). Uses onnxruntime's ``qdq_loss_debug``.
    """
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as qdq
    rows = []
    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        prepared = prepare_for_quantization(fp32_path, os.path.join(tmp, 'prepared.onnx'))
        for tensor, pair in qdq.create_weight_matching(prepared, str(int8_path)).items():
            w = pair['float']
            rows.append(RangeRow('weight', tensor, float(w.min()), float(w.max()),
                                 _channel_spread(w, 0) if w.ndim > 1 else 1.0, sqnr_db(w, pair['dequantized']),
                                 math.nan))
        model = onnx.load(prepared)          # carries the shapes inferred by the pre-processing
        feeds = [{model.graph.input[0].name: x} for x in inputs]
        acts = {}
        for name, path in (('int8', int8_path), ('fp32', prepared)):
            augmented = os.path.join(tmp, f'{name}.augmented.onnx')
            qdq.modify_model_output_intermediate_tensors(str(path), augmented)
            acts[name] = qdq.collect_activations(augmented, feeds)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output)}
    for tensor, pair in qdq.create_activation_matching(acts['int8'], acts['fp32']).items():
        pre_list = pair['pre_qdq']
        if min(float(a.min()) for a in pair['post_qdq']) >= 0 > min(float(a.min()) for a in pre_list):
            # a ReLU the quantizer removed (its output range starts at 0, so the QDQ pair clamps):
            # the float signal is the ReLU output, not the conv output the pair now reads
            pre_list = [np.maximum(a, 0) for a in pre_list]
        pre = np.concatenate([a.ravel() for a in pre_list])
        shape = shapes.get(tensor, [])
        channels = shape[1] if len(shape) == 4 else 0     # H, W may be unknown to shape inference
        spread = 1.0
        if channels and pre_list[0].size % channels == 0:  # batch 1, NCHW: rows are channels
            spread = _channel_spread(np.concatenate([a.reshape(channels, -1) for a in pre_list], axis=1), 0)
        rows.append(RangeRow('activation', tensor, float(pre.min()), float(pre.max()), spread,
                             sqnr_db(pre_list, pair['post_qdq']),
                             sqnr_db(pair['float'], pair['post_qdq']) if 'float' in pair else math.nan))
    return sorted(rows, key=lambda r: r.sqnr_db)
