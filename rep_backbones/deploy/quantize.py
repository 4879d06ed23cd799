"""INT8 graphs from a fused fp32 ONNX graph, two ways; both refuse an unfused graph.

* :func:`quantize_onnx` — onnxruntime's ``quantize_static`` in QDQ format: int8 weights, symmetric, per
  output channel; uint8 activations, per tensor, calibrated on a few images. The result is an ONNX file
  that onnxruntime runs with int8 kernels, and that OpenVINO also reads (it fuses the QDQ pairs).
* :func:`nncf_quantize` — NNCF's post-training quantization of the OpenVINO model (min-max ranges, then
  bias correction of every quantized convolution); :func:`nncf_quantize_with_accuracy_control` adds NNCF's
  accuracy-control loop: the caller's validation function (the task's own metric) is run on the quantized
  model, and while the drop exceeds ``max_drop`` the quantizer groups that hurt most are put back in float.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from rep_backbones.fusion import find_rep_backbones
from rep_backbones.io.atomic import PathLike, atomic_write

CALIBRATION_METHODS = ('minmax', 'entropy', 'percentile')


class UnfusedModelError(ValueError):
    """The model (or ONNX graph) still holds BatchNorm / training-form branches."""


class AccuracyTargetError(RuntimeError):
    """INT8 cannot hold the metric within the drop asked for; ``best_drop`` is the smallest drop reached."""

    def __init__(self, message: str, best_drop: float):
        super().__init__(message)
        self.best_drop = best_drop


class ZeroMetricError(ValueError):
    """The fp32 model scores 0: NNCF's accuracy control divides by the fp32 metric (it computes a relative
    drop even when the bound is absolute), so it cannot run; an untrained model is the usual cause."""


def assert_fused(model: nn.Module) -> None:
    """Raise :class:`UnfusedModelError` if a re-parameterizable backbone in ``model`` is not in deploy form,
    or any BatchNorm is left inside one."""
    backbones = find_rep_backbones(model)
    if not backbones:
        raise UnfusedModelError(f'{type(model).__name__} holds no rep_backbones backbone to check')
    for name, backbone in backbones:
        norms = [n for n, m in backbone.named_modules() if isinstance(m, _BatchNorm)]
        if not backbone.deploy or norms:
            raise UnfusedModelError(
                f'{name or type(backbone).__name__} is not fused (deploy={backbone.deploy}, {len(norms)} BatchNorm '
                f'layer(s), e.g. {norms[:3]}): INT8 needs the deploy form; fuse it with rep_backbones.fuse')


def onnx_batchnorm_nodes(path: PathLike) -> List[str]:
    """Names of the ``BatchNormalization`` nodes in an ONNX graph (main graph)."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name or node.output[0] for node in graph.node if node.op_type == 'BatchNormalization']


def assert_fused_graph(path: PathLike) -> None:
    norms = onnx_batchnorm_nodes(path)
    if norms:
        raise UnfusedModelError(
            f'{path} has {len(norms)} BatchNormalization node(s) (e.g. {norms[:3]}): it is not the fused graph. '
            'Fuse the model (rep_backbones.fuse) before export; INT8 of training-form branches is not supported')


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI int8 dot products (``avx512_vnni`` / ``avx_vnni`` in /proc/cpuinfo).
    Without them onnxruntime's u8 x s8 kernels add pairs of products in int16 with saturation, which 8-bit
    weights can overflow (RepGhostNet 0.5x's stride-4 SQNR fell from 12.2 to 9.1 dB on an AVX2-only CPU);
    7-bit weights (``reduce_range``, onnxruntime's advice for such CPUs) cannot. Unknown (not Linux): False."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read()
    except OSError:
        return False
    return 'avx512_vnni' in flags or 'avx_vnni' in flags


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs known, harmless warnings through the root logger: keep them off the
    console while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.setLevel(level)


def _reader(input_name: str, inputs: Sequence[np.ndarray], desc: Optional[str]):
    """A ``CalibrationDataReader`` over ``inputs`` (with a tqdm progress bar when ``desc``)."""
    from onnxruntime.quantization import CalibrationDataReader
    from tqdm import tqdm

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(tqdm(inputs, desc=desc, unit='img', disable=desc is None, leave=False))

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {input_name: x}

    return Reader()


def prepare_for_quantization(fp32_path: PathLike, out_path: PathLike) -> str:
    """onnxruntime's ``quant_pre_process`` (shape inference, constant folding, Identity removal) of
    ``fp32_path`` into ``out_path``: the float graph that :func:`quantize_onnx` quantizes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    quant_pre_process(str(fp32_path), str(out_path))
    return str(out_path)


def quantize_onnx(fp32_path: PathLike, int8_path: PathLike, calibration: Sequence[np.ndarray],
                  per_channel: bool = True, method: str = 'minmax', progress: bool = True,
                  exclude: Optional[str] = None, activation_bits: int = 8,
                  reduce_range: Optional[bool] = None, op_types: Optional[Sequence[str]] = None) -> List[str]:
    """onnxruntime static INT8 (QDQ) of ``fp32_path`` into ``int8_path`` (written atomically).

    ``calibration``: normalised ``1 x 3 x H x W`` float32 arrays; ``method``: ``minmax``, ``entropy`` or
    ``percentile``. ``exclude``: a regular expression; nodes whose name it matches (``re.search``) stay in
    float. Returns the excluded node names. ``activation_bits=16``: uint16 activations (a precision
    diagnostic: onnxruntime runs it through float). ``reduce_range``: 7-bit weights; ``None`` = where the CPU
    has no VNNI (:func:`cpu_has_vnni`). ``op_types``: quantize only these operator types (default: every type
    onnxruntime quantizes); ``('Conv', 'Gemm', 'MatMul')`` keeps a whole-model graph's post-processing (box
    decoding, NMS, RoI align, mask pasting) in float (docs/deploy.md, Mask R-CNN: with every type quantized, the
    toy Mask R-CNN's bbox mAP fell from 0.314 to 0.127).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    if method not in CALIBRATION_METHODS:
        raise ValueError(f'calibration method {method!r} unknown; choose from {CALIBRATION_METHODS}')
    if not calibration:
        raise ValueError('no calibration images: static quantization needs at least one')
    if activation_bits not in (8, 16):
        raise ValueError(f'activation_bits must be 8 or 16, got {activation_bits}')
    assert_fused_graph(fp32_path)
    import onnx
    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as workdir, atomic_write(int8_path) as tmp, _quiet_root_logger():
        prepared = prepare_for_quantization(fp32_path, os.path.join(workdir, 'prepared.onnx'))
        names = [n.name for n in onnx.load(prepared).graph.node]
        excluded = [n for n in names if exclude and re.search(exclude, n)]
        if exclude and not excluded:
            raise ValueError(f'--exclude {exclude!r} matches no node of {fp32_path} (node names look like {names[:3]})')
        quantize_static(prepared, tmp, _reader(input_name, calibration, 'calibration' if progress else None),
                        nodes_to_exclude=excluded, op_types_to_quantize=list(op_types) if op_types else None,
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8 if activation_bits == 8 else QuantType.QUInt16,
                        weight_type=QuantType.QInt8,
                        reduce_range=(not cpu_has_vnni()) if reduce_range is None else reduce_range,
                        calibrate_method={'minmax': CalibrationMethod.MinMax, 'entropy': CalibrationMethod.Entropy,
                                          'percentile': CalibrationMethod.Percentile}[method])
    return excluded


def read_openvino(fp32_path: PathLike):
    """The fused fp32 ONNX graph as an ``openvino.Model`` (refused when it holds BatchNorm)."""
    import openvino as ov
    assert_fused_graph(fp32_path)
    return ov.Core().read_model(str(fp32_path))


def nncf_quantize(fp32_path: PathLike, calibration: Sequence[np.ndarray]):
    """NNCF post-training INT8 of the OpenVINO model of ``fp32_path`` (``performance`` preset: symmetric
    int8 weights per channel and activations per tensor; min-max ranges over ``calibration``; fast bias
    correction). Returns the quantized ``openvino.Model``."""
    import nncf
    if not calibration:
        raise ValueError('no calibration images: static quantization needs at least one')
    return nncf.quantize(read_openvino(fp32_path), nncf.Dataset(list(calibration)),
                         subset_size=len(calibration), fast_bias_correction=True)


def nncf_quantize_with_accuracy_control(fp32_path: PathLike, calibration: Sequence[np.ndarray],
                                        validation_items: Iterable, validate: Callable[[object, Iterable], float],
                                        to_input: Callable[[object], np.ndarray], max_drop: float,
                                        max_iterations: int = 8) -> Tuple[object, dict]:
    """NNCF's ``quantize_with_accuracy_control`` with ``validate(compiled_model, items) -> metric`` (higher is
    better, e.g. bbox mAP in [0, 1]) as its validation function and ``max_drop`` as the absolute bound.
    ``to_input(item)``: the network input of a validation item (NNCF ranks quantizers on the raw outputs).

    Returns ``(openvino.Model, info)``; ``info`` holds ``fp32_metric``, ``int8_metric`` and ``drop``, measured
    again on the returned model. Raises :class:`AccuracyTargetError` (with the best drop reached) when NNCF
    could not bring the drop within ``max_drop`` in ``max_iterations`` reverted groups.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    from .runtimes import openvino_compiled
    if not calibration:
        raise ValueError('no calibration images: static quantization needs at least one')
    items = list(validation_items)
    fp32 = read_openvino(fp32_path)
    fp32_metric = float(validate(openvino_compiled(fp32, 1), items))
    if fp32_metric == 0:
        raise ZeroMetricError('accuracy control needs a model that scores above 0 on the validation images: the '
                              'fp32 metric is 0 (an untrained checkpoint?); quantize without --max-drop instead')
    model = nncf.quantize_with_accuracy_control(
        fp32, nncf.Dataset(list(calibration)), nncf.Dataset(items, to_input), validate, max_drop=max_drop,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration), fast_bias_correction=True,
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            max_num_iterations=max_iterations, num_ranking_workers=1))
    int8_metric = float(validate(openvino_compiled(model, 1), items))
    info = dict(fp32_metric=fp32_metric, int8_metric=int8_metric, drop=fp32_metric - int8_metric, max_drop=max_drop)
    if info['drop'] > max_drop:
        raise AccuracyTargetError(
            f'INT8 cannot meet --max-drop {max_drop}: NNCF accuracy control kept the metric at {int8_metric:.4f} '
            f'vs fp32 {fp32_metric:.4f}; the best reachable drop was {info["drop"]:.4f}', info['drop'])
    return model, info
