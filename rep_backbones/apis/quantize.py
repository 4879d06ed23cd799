"""INT8 deployment of fused models with onnxruntime static quantization, and what INT8 costs.

Pipeline (``tools/quantize_onnx.py``): fused model -> fp32 ONNX (:func:`~.onnx_export.export_onnx`,
TorchScript exporter) -> ``onnxruntime.quantization.quantize_static`` in QDQ format (int8 weights,
symmetric, per output channel; uint8 activations, per tensor, MinMax calibration on N images) ->
:func:`parity_report` (SQNR in dB and max abs error of every output, INT8 vs fp32, on held-out images).

Quantization needs the *fused* graph: a BatchNorm left in the model is refused
(:class:`UnfusedModelError`), in PyTorch (:func:`assert_fused`) and in the ONNX graph
(:func:`quantize_onnx`). :func:`range_report` lists, per weight and per quantized activation of the
QDQ graph, its float range and the SQNR of that single quantization step (onnxruntime's
``qdq_loss_debug``), worst first: where a family loses. :func:`task_metrics` scores the fp32 and
INT8 graphs on the config's test set with the config's own evaluator: :func:`detection_map` (a
single-stage detector, mmdet) or :func:`segmentation_miou` (a segmentor, mmseg's ``IoUMetric``).

Before export, :func:`apply_int8_layout` puts each fused backbone into the exact layout the family
table measured INT8-friendlier (:data:`INT8_LAYOUTS`: RepMobile's identity split out, RepNeXt M at
level 2); the float function does not change.

The family table (:func:`family_table`, docs/int8.md): :func:`calibrate_bn` gives randomly
initialised backbones realistic BatchNorm statistics, and :func:`fused_layouts` builds the exact
alternative fused layouts whose INT8 error is compared (:func:`identity_split`,
:func:`repnext_norm_forward`, RepNeXt's level 2).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..fusion import find_rep_backbones
from .atomic import PathLike, atomic_write

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')
#: ImageNet normalisation (RGB, 0..255), what every backbone family here was trained with
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
CALIBRATION_METHODS = ('minmax', 'entropy', 'percentile')


class UnfusedModelError(ValueError):
    """The model (or ONNX graph) still holds BatchNorm / training-form branches."""


# -- checks ------------------------------------------------------------------------------------
def assert_fused(model: nn.Module) -> None:
    """Raise :class:`UnfusedModelError` if a re-parameterizable backbone in ``model`` is not in
    deploy form or any BatchNorm is left inside one."""
    backbones = find_rep_backbones(model)
    if not backbones:
        raise UnfusedModelError(f'{type(model).__name__} holds no rep_backbones backbone to check')
    for name, backbone in backbones:
        label = name or type(backbone).__name__
        norms = [n for n, m in backbone.named_modules() if isinstance(m, _BatchNorm)]
        if not backbone.deploy or norms:
            raise UnfusedModelError(
                f'{label} is not fused (deploy={backbone.deploy}, {len(norms)} BatchNorm layer(s), e.g. '
                f'{norms[:3]}): INT8 needs the deploy form. Drop --no-fuse (the tool then fuses with '
                'rep_backbones.fuse), or load a fused checkpoint into the deploy config')


def onnx_batchnorm_nodes(path: PathLike) -> List[str]:
    """Names of the ``BatchNormalization`` nodes in an ONNX graph (main graph)."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name or node.output[0] for node in graph.node if node.op_type == 'BatchNormalization']


# -- images ------------------------------------------------------------------------------------
def list_images(folder: PathLike) -> List[Path]:
    """Image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'image folder {folder} does not exist')
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {folder}')
    return files


def toy_image_folders(root: PathLike, n_train: int, n_val: int, image_size: Tuple[int, int]) -> Tuple[Path, Path]:
    """``(train, val)`` image folders of a toy COCO set generated under ``root`` (reused when it is
    there with the same settings; calibration reads train, the parity report val)."""
    from detection.toy_coco import make_toy_coco
    paths = make_toy_coco(root, num_train=max(int(n_train), 1), num_val=max(int(n_val), 1),
                          image_size=tuple(max(64, int(s)) for s in image_size))
    return Path(paths['train_img_dir']), Path(paths['val_img_dir'])


def read_image(path: PathLike, shape: Tuple[int, int]) -> np.ndarray:
    """``H x W x 3`` uint8 RGB, resized (bilinear) to ``shape = (H, W)``."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert('RGB').resize((shape[1], shape[0]), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def imagenet_preprocess(images: Sequence[np.ndarray]) -> torch.Tensor:
    """RGB uint8 ``H x W x 3`` images -> normalised float ``N x 3 x H x W`` (bare backbones)."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def mm_preprocess(model: nn.Module) -> Callable[[Sequence[np.ndarray]], torch.Tensor]:
    """The model's own ``data_preprocessor`` (mean/std, channel order, padding) as a function of
    RGB uint8 images; it is given BGR ``3 x H x W`` tensors, as mmcv's ``LoadImageFromFile`` makes."""
    def run(images: Sequence[np.ndarray]) -> torch.Tensor:
        inputs = [torch.from_numpy(np.ascontiguousarray(img[..., ::-1])).permute(2, 0, 1) for img in images]
        with torch.no_grad():
            return model.data_preprocessor(dict(inputs=inputs), False)['inputs'].float()
    return run


def load_inputs(files: Sequence[PathLike], shape: Tuple[int, int],
                preprocess: Callable[[Sequence[np.ndarray]], torch.Tensor]) -> List[np.ndarray]:
    """One normalised float32 ``1 x 3 x H x W`` array per image file."""
    return [preprocess([read_image(f, shape)]).numpy().astype(np.float32) for f in files]


# -- quantization ------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_onnxruntime_quantizer():
    """onnxruntime.quantization logs through the root logger; its warnings here are known and
    harmless (e.g. per-use copies of a shared zero bias, which the exporter deduplicates, have no
    float twin to compare with): keep them off the console while it runs."""
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
    """onnxruntime's ``quant_pre_process`` (shape inference, basic graph optimisation: constant
    folding, Identity removal) of ``fp32_path`` into ``out_path``: the float graph that
    :func:`quantize_onnx` quantizes, and the reference of :func:`range_report`."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    quant_pre_process(str(fp32_path), str(out_path))
    return str(out_path)


def quantize_onnx(fp32_path: PathLike, int8_path: PathLike, calibration: Sequence[np.ndarray],
                  per_channel: bool = True, method: str = 'minmax', progress: bool = True,
                  exclude: Optional[str] = None, activation_bits: int = 8,
                  reduce_range: Optional[bool] = None) -> List[str]:
    """Static INT8 quantization of ``fp32_path`` into ``int8_path`` (written atomically).

    QDQ format; weights int8 symmetric (per output channel with ``per_channel``), activations uint8
    asymmetric per tensor (onnxruntime's choice for x86 CPUs with VNNI, as this machine has), ranges
    from ``calibration`` (normalised ``1 x 3 x H x W`` float32 arrays) with ``method`` (``minmax``,
    ``entropy`` or ``percentile``). ``exclude``: a regular expression; graph nodes whose name it
    matches (``re.search``, e.g. ``'conv_dw/Conv$'``) stay in float (mixed precision). Returns the
    excluded node names. ``activation_bits=16``: uint16 activations (A16W8, a precision diagnostic:
    onnxruntime's CPU kernels run it through float). ``reduce_range``: 7-bit weights; None = on where
    the CPU has no VNNI (:func:`cpu_has_vnni`). Refuses a graph with BatchNormalization nodes.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    if method not in CALIBRATION_METHODS:
        raise ValueError(f'calibration method {method!r} unknown; choose from {CALIBRATION_METHODS}')
    if not calibration:
        raise ValueError('no calibration images: static quantization needs at least one')
    if activation_bits not in (8, 16):
        raise ValueError(f'activation_bits must be 8 or 16, got {activation_bits}')
    norms = onnx_batchnorm_nodes(fp32_path)
    if norms:
        raise UnfusedModelError(
            f'{fp32_path} has {len(norms)} BatchNormalization node(s) (e.g. {norms[:3]}): it is not the '
            'fused graph. Fuse the model (rep_backbones.fuse) before export; INT8 of training-form '
            'branches is not supported')
    import onnxruntime as ort
    input_name = ort.InferenceSession(str(fp32_path), providers=['CPUExecutionProvider']).get_inputs()[0].name
    calib_method = {'minmax': CalibrationMethod.MinMax, 'entropy': CalibrationMethod.Entropy,
                    'percentile': CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory() as workdir, atomic_write(int8_path) as tmp, _quiet_onnxruntime_quantizer():
        prepared = prepare_for_quantization(fp32_path, os.path.join(workdir, 'prepared.onnx'))
        excluded = []
        if exclude:
            import onnx
            excluded = [n.name for n in onnx.load(prepared).graph.node if re.search(exclude, n.name)]
            if not excluded:
                raise ValueError(f'--exclude {exclude!r} matches no node of {fp32_path} (node names look like '
                                 f'{[n.name for n in onnx.load(prepared).graph.node][:3]})')
        quantize_static(prepared, tmp, _reader(input_name, calibration, 'calibration' if progress else None),
                        nodes_to_exclude=excluded,
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8 if activation_bits == 8 else QuantType.QUInt16,
                        weight_type=QuantType.QInt8,
                        reduce_range=(not cpu_has_vnni()) if reduce_range is None else reduce_range,
                        calibrate_method=calib_method)
    return excluded


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI int8 dot products (``avx512_vnni`` / ``avx_vnni`` in /proc/cpuinfo).
    Without them onnxruntime's u8 x s8 kernels add pairs of products in int16 with saturation
    (``vpmaddubsw``), which 8-bit weights can overflow: measured on an AVX2-only AMD EPYC, RepGhostNet
    0.5x's stride-4 SQNR fell from 12.2 dB to 9.1 dB. 7-bit weights (``reduce_range``, what
    onnxruntime's documentation advises for such CPUs) cannot overflow. Unknown (not Linux): False."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read()
    except OSError:
        return False
    return 'avx512_vnni' in flags or 'avx_vnni' in flags


# -- parity ------------------------------------------------------------------------------------
def quiet_session(path: PathLike, threads: int):
    """onnxruntime CPU session with ``threads`` intra-op threads that do not spin-wait after a run:
    spinning threads would take the cores from the PyTorch calls timed in turn with them."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=['CPUExecutionProvider'])


def sqnr_db(reference, test) -> float:
    """Signal-to-quantization-noise ratio ``20 log10(|ref| / |ref - test|)`` in dB (onnxruntime's
    ``qdq_loss_debug`` definition; arrays or lists of arrays)."""
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio
    ref = reference if isinstance(reference, (list, tuple)) else [reference]
    out = test if isinstance(test, (list, tuple)) else [test]
    if all(np.array_equal(a, b) for a, b in zip(ref, out)):
        return math.inf                     # exact (e.g. an all-zero bias)
    return compute_signal_to_quantization_noice_ratio(reference, test)


@dataclasses.dataclass
class OutputParity:
    name: str
    shape: Tuple[int, ...]
    sqnr_db: float          # over all evaluated images
    max_abs: float          # max |int8 - fp32|
    max_ref: float          # max |fp32|, the scale of max_abs

    def line(self) -> str:
        return (f'{self.name} {self.shape}: SQNR {self.sqnr_db:.1f} dB, max |diff| {self.max_abs:.3g} '
                f'(max |fp32| {self.max_ref:.3g})')


def parity_report(fp32_session, int8_session, inputs: Sequence[np.ndarray]) -> List[OutputParity]:
    """INT8 vs fp32 outputs of two onnxruntime sessions on ``inputs``, per output."""
    if not inputs:
        raise ValueError('parity report needs at least one input')
    name = fp32_session.get_inputs()[0].name
    names = [o.name for o in fp32_session.get_outputs()]
    refs: List[List[np.ndarray]] = [[] for _ in names]
    tests: List[List[np.ndarray]] = [[] for _ in names]
    for x in inputs:
        for store, session in ((refs, fp32_session), (tests, int8_session)):
            for i, out in enumerate(session.run(None, {name: x})):
                store[i].append(out)
    rows = []
    for out_name, ref, test in zip(names, refs, tests):
        diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, test))
        rows.append(OutputParity(out_name, tuple(ref[0].shape), sqnr_db(ref, test), diff,
                                 max(float(np.abs(a).max()) for a in ref)))
    return rows


# -- task accuracy: detection mAP, segmentation mIoU -------------------------------------------
TASKS = ('detection', 'segmentation')


def eval_task(model: nn.Module) -> Optional[str]:
    """``'detection'`` for a single-stage mmdet detector (``bbox_head.predict_by_feat``, no RoI
    head), ``'segmentation'`` for an mmseg segmentor (``decode_head`` + ``postprocess_result``),
    ``None`` for anything else (two-stage detectors, bare backbones, cascades): what ``--eval`` scores."""
    if hasattr(model, 'bbox_head') and not hasattr(model, 'roi_head') and hasattr(model.bbox_head, 'predict_by_feat'):
        return 'detection'
    if hasattr(model, 'postprocess_result') and hasattr(getattr(model, 'decode_head', None), 'predict_by_feat'):
        return 'segmentation'
    return None


def _scope(task: str) -> str:
    return {'detection': 'mmdet', 'segmentation': 'mmseg'}[task]


def eval_inputs(model: nn.Module, task: Optional[str] = None, split: str = 'test') -> Tuple[object, List[dict]]:
    """``(dataset, batches)``: the config's ``{split}_dataloader`` dataset (mmdet or mmseg, after
    ``task``, default :func:`eval_task`) and each image as the model's ``data_preprocessor`` makes it
    (``inputs``: normalised ``1 x 3 x H x W``; ``data_samples``, with the ground truth)."""
    import importlib

    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope
    task = task or eval_task(model)
    if task not in TASKS:
        raise ValueError(f'{type(model).__name__} is neither a single-stage detector nor a segmentor')
    scope = _scope(task)
    datasets = importlib.import_module(f'{scope}.registry').DATASETS
    with DefaultScope.overwrite_default_scope(scope):
        dataset = datasets.build(model.cfg.get(f'{split}_dataloader').dataset)
    with torch.no_grad():
        batches = [model.data_preprocessor(pseudo_collate([dataset[i]]), False) for i in range(len(dataset))]
    return dataset, batches


def detection_inputs(model: nn.Module) -> Tuple[object, List[dict]]:
    """:func:`eval_inputs` of a detector (its test set)."""
    return eval_inputs(model, 'detection')


def dataset_image_files(model: nn.Module, task: Optional[str] = None, split: str = 'train') -> List[Path]:
    """The image files of the config's ``{split}_dataloader`` dataset (calibration for ``--eval``)."""
    import importlib

    from mmengine.registry import DefaultScope
    task = task or eval_task(model)
    scope = _scope(task)
    dataset_cfg = model.cfg.get(f'{split}_dataloader').dataset.copy()
    dataset_cfg['pipeline'] = []                               # file names only: no loading, no augmentation
    datasets = importlib.import_module(f'{scope}.registry').DATASETS
    with DefaultScope.overwrite_default_scope(scope):
        dataset = datasets.build(dataset_cfg)
    return [Path(dataset.get_data_info(i)['img_path']) for i in range(len(dataset))]


def _outputs(runner, x: np.ndarray) -> List[torch.Tensor]:
    """Outputs of an onnxruntime session (``.run``) or of a callable (``x`` -> arrays / tensors)."""
    outs = runner.run(None, {runner.get_inputs()[0].name: x}) if hasattr(runner, 'run') else runner(x)
    return [o if isinstance(o, torch.Tensor) else torch.from_numpy(np.asarray(o)) for o in outs]


def _evaluators(model: nn.Module, names: Iterable[str], dataset, task: str) -> Dict[str, object]:
    import copy
    import importlib

    from mmengine.evaluator import Evaluator
    from mmengine.registry import DefaultScope
    scope = _scope(task)
    metrics = importlib.import_module(f'{scope}.registry').METRICS
    with DefaultScope.overwrite_default_scope(scope):
        evaluators = {name: Evaluator(metrics.build(copy.deepcopy(model.cfg.test_evaluator))) for name in names}
    for evaluator in evaluators.values():
        evaluator.dataset_meta = dataset.metainfo
    return evaluators


def detection_map(model: nn.Module, sessions: Dict[str, object], dataset, batches: Sequence[dict],
                  progress: bool = True) -> Dict[str, Dict[str, float]]:
    """mmdet's own evaluator (the config's ``test_evaluator``, e.g. ``CocoMetric``) on the outputs
    of each onnxruntime session (name -> session, or a callable) of a single-stage detector exported
    in tensor mode (per-level class scores, then per-level box regressions); post-processing --
    anchors, decoding, score threshold, NMS, rescaling -- is the model's ``bbox_head.predict_by_feat``."""
    import copy

    from tqdm import tqdm
    evaluators = _evaluators(model, sessions, dataset, 'detection')
    for data in tqdm(batches, desc='detection mAP', unit='img', disable=not progress, leave=False):
        x = data['inputs'].numpy()
        for name, session in sessions.items():
            outs = _outputs(session, x)
            levels = len(outs) // 2
            samples = copy.deepcopy(data['data_samples'])
            with torch.no_grad():
                preds = model.bbox_head.predict_by_feat(outs[:levels], outs[levels:],
                                                        batch_img_metas=[s.metainfo for s in samples], rescale=True)
            for sample, pred in zip(samples, preds):
                sample.pred_instances = pred
            evaluators[name].process(data_samples=samples, data_batch=data)
    return {name: evaluator.evaluate(len(batches)) for name, evaluator in evaluators.items()}


def segmentation_miou(model: nn.Module, sessions: Dict[str, object], dataset, batches: Sequence[dict],
                      progress: bool = True, reference: Optional[str] = None) -> Dict[str, Dict[str, float]]:
    """mmseg's own evaluator (the config's ``test_evaluator``: ``IoUMetric``, aAcc / mIoU / mAcc in
    percent) on the outputs of each onnxruntime session (name -> session, or a callable) of a
    segmentor exported in tensor mode (decode-head logits, 1/4 of the input size). Post-processing
    is mmseg's, as ``EncoderDecoder.predict`` does it: ``decode_head.predict_by_feat`` (bilinear
    resize to the input size) then ``postprocess_result`` (padding cropped, bilinear resize to the
    label's original size, arg-max); ``IoUMetric`` skips the ignore index (255).

    Every session but ``reference`` (default: the first) also gets its agreement with it, over all
    test images: ``argmax_agreement``, the percent of predicted pixels (every pixel of the label
    size, labelled or not) whose class is the reference's, and ``logits_sqnr`` (dB), the SQNR of its
    raw logits against the reference's (:func:`sqnr_db`). Unlike mIoU these do not depend on the
    model being any good: a weak model's mIoU can move either way under a broken quantization."""
    import copy

    from tqdm import tqdm
    reference = reference or next(iter(sessions))
    if reference not in sessions:
        raise ValueError(f'reference {reference!r} is not one of the sessions {list(sessions)}')
    evaluators = _evaluators(model, sessions, dataset, 'segmentation')
    logits_of: Dict[str, List[np.ndarray]] = {name: [] for name in sessions}
    agree = {name: [0, 0] for name in sessions}          # pixels of the reference's class, pixels
    for data in tqdm(batches, desc='segmentation mIoU', unit='img', disable=not progress, leave=False):
        x = data['inputs'].numpy()
        preds = {}
        for name, session in sessions.items():
            logits = _outputs(session, x)[0]
            logits_of[name].append(logits.numpy())
            samples = copy.deepcopy(data['data_samples'])
            with torch.no_grad():
                seg_logits = model.decode_head.predict_by_feat(logits, [s.metainfo for s in samples])
                samples = model.postprocess_result(seg_logits, samples)
            preds[name] = torch.cat([s.pred_sem_seg.data.flatten() for s in samples])
            evaluators[name].process(data_samples=samples, data_batch=data)
        for name, pred in preds.items():
            agree[name][0] += int((pred == preds[reference]).sum())
            agree[name][1] += pred.numel()
    results = {name: evaluator.evaluate(len(batches)) for name, evaluator in evaluators.items()}
    for name in sessions:
        if name != reference:
            results[name]['argmax_agreement'] = 100.0 * agree[name][0] / max(agree[name][1], 1)
            results[name]['logits_sqnr'] = float(sqnr_db(logits_of[reference], logits_of[name]))
    return results


def task_metrics(model: nn.Module, sessions: Dict[str, object], dataset, batches: Sequence[dict],
                 task: Optional[str] = None, progress: bool = True) -> Dict[str, Dict[str, float]]:
    """:func:`detection_map` or :func:`segmentation_miou`, after ``task`` (default :func:`eval_task`)."""
    task = task or eval_task(model)
    if task == 'detection':
        return detection_map(model, sessions, dataset, batches, progress)
    if task == 'segmentation':
        return segmentation_miou(model, sessions, dataset, batches, progress)
    raise ValueError(f'{type(model).__name__} is neither a single-stage detector nor a segmentor')


#: the metrics each task prints (keys of the evaluator's result that end so)
TASK_METRIC_KEYS = {'detection': ('bbox_mAP', 'bbox_mAP_50'), 'segmentation': ('aAcc', 'mIoU', 'mAcc')}


# -- per-layer ranges --------------------------------------------------------------------------
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
    with tempfile.TemporaryDirectory() as tmp, _quiet_onnxruntime_quantizer():
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


# -- the family table's setting ----------------------------------------------------------------
@torch.no_grad()
def calibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], seed: int = 0) -> nn.Module:
    """Realistic BatchNorm state for a randomly initialised model (the family table's setting).

    Every BN gets a seeded random affine -- ``weight`` log-uniform in [0.25, 2] (trained nets'
    per-channel gains differ by this order), ``bias`` uniform in [-0.5, 0.5] -- and running
    statistics measured on ``batches`` (train-mode forward, cumulative average over the batches),
    so that each BN normalises what it really sees on images and activations stay at their natural
    scale through deep nets. Returns ``model`` in eval mode.
    """
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for m in norms:
        if m.affine:
            m.weight.copy_(torch.exp(torch.empty(m.num_features).uniform_(math.log(0.25), math.log(2.0),
                                                                             generator=gen)))
            m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
        m.reset_running_stats()
        m.momentum = None                      # cumulative moving average over the batches
    model.train()
    for x in batches:
        model(x)
    return model.eval()


@torch.no_grad()
def linear_probe_segmentor(model: nn.Module, batches: Sequence[dict], seed: int = 0, ridge: float = 1e-3) -> nn.Module:
    """A randomly initialised mmseg segmentor made to segment, without training (the ``--eval``
    mIoU setting of tests/test_quantize.py and docs/int8.md; no trained checkpoint exists here).

    Every BatchNorm gets :func:`calibrate_bn`'s seeded affine and statistics measured on
    ``batches`` (as :func:`eval_inputs` makes them: ``inputs`` and ``data_samples`` with
    ``gt_sem_seg``); then the decode head's final 1x1 classifier ``conv_seg`` is fitted by ridge
    regression (``ridge`` x the mean feature energy) of one-hot labels on the features it reads,
    labels taken at the logits' 1/4 resolution (nearest), pixels of the ignore index left out: a
    linear probe on random features. Returns ``model`` in eval mode, still in training form.
    """
    from torch.nn import functional as F

    from .build import TensorModeWrapper
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


@torch.no_grad()
def repnext_norm_forward(model: nn.Module) -> nn.Module:
    """RepNeXt layout option (exact, training form, in place): in every ``MetaNeXtBlock`` fold the
    BatchNorm after the token mixer *forward* into the channel mixer's first 1x1 ConvNorm instead of
    (at fusion) backward into the token mixer, whose kernels then keep their trained range.

    ``norm(t) = s * t + b`` feeds only ``conv1x1`` (no padding), so ``W' = W * s`` (input channels)
    and the constant ``W @ b`` moves into the following BN's running mean; the block's ``norm``
    becomes an exact identity (weight 1, bias 0, mean 0, var 1, eps 0). Downsample units are left
    as they are (their residual reads the normalised tensor).
    """
    from ..models.repnext import MetaNeXtBlock
    from ..reparam import bn_scale_shift
    for block in model.modules():
        if not isinstance(block, MetaNeXtBlock) or not isinstance(block.norm, _BatchNorm):
            continue
        scale, shift = bn_scale_shift(block.norm)
        first = block.channel_mixer[0]
        weight = first.conv.weight
        first.norm.running_mean.sub_(weight.flatten(1) @ shift)
        weight.mul_(scale.view(1, -1, 1, 1))
        block.norm.weight.fill_(1.0)
        block.norm.bias.zero_()
        block.norm.running_mean.zero_()
        block.norm.running_var.fill_(1.0)
        block.norm.eps = 0.0
    return model


class SplitShortcut(nn.Module):
    """``conv(x) + scale * x`` (``x`` repeated ``repeats`` times along channels): a shortcut kept
    out of the fused kernel, for the ``identity-split`` layout (:func:`identity_split`)."""

    def __init__(self, conv: nn.Conv2d, scale: Optional[torch.Tensor] = None, repeats: int = 1):
        super().__init__()
        self.conv = conv
        self.register_buffer('scale', None if scale is None else scale.detach().reshape(1, -1, 1, 1).clone())
        self.repeats = repeats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = x if self.scale is None else x * self.scale
        return self.conv(x) + (short.repeat(1, self.repeats, 1, 1) if self.repeats > 1 else short)


@torch.no_grad()
def identity_split(model: nn.Module) -> Optional[nn.Module]:
    """Fused copy of a training-form ``model`` whose identity shortcuts stay outside the kernels
    (exact): RepGhost modules keep their BN-only branch as ``dw_conv(x) + s * x`` instead of adding
    ``s`` to the depthwise kernel's centre tap, RepMobile blocks their ``[I; I]`` shortcut as
    ``conv1x1(x) + cat(x, x)`` instead of in the 1x1 kernel. One extra Mul/Add per module; ``None``
    when ``model`` has neither."""
    import copy

    from timm.models.repghost import RepGhostModule

    from .. import fuse
    from ..models.repmobile import RepMobileBlock
    from ..reparam import bn_scale_shift
    trained = dict(model.named_modules())
    fused = fuse(copy.deepcopy(model).eval())
    split = 0
    for name, module in fused.named_modules():
        if isinstance(module, RepGhostModule) and len(trained[name].fusion_bn):
            scale, _ = bn_scale_shift(trained[name].fusion_bn[0])      # its shift stays in the bias
            conv = module.cheap_operation
            kh, kw = conv.kernel_size
            conv.weight[:, 0, kh // 2, kw // 2] -= scale
            module.cheap_operation = SplitShortcut(conv, scale)
            split += 1
        elif isinstance(module, RepMobileBlock):
            _split_repmobile_block(module)
            split += 1
    return fused if split else None


@torch.no_grad()
def _split_repmobile_block(block: nn.Module) -> bool:
    """A fused ``RepMobileBlock``'s ``[I; I]`` shortcut taken back out of its 1x1 kernel (exact, in
    place): ``conv_pw[1]`` becomes ``conv1x1(x) + cat(x, x)``. False when already split."""
    from ..reparam import tiled_identity_kernel
    conv = block.conv_pw[1]
    if isinstance(conv, SplitShortcut):
        return False
    conv.weight -= tiled_identity_kernel(conv.in_channels, block.stride, dtype=conv.weight.dtype,
                                         device=conv.weight.device)
    block.conv_pw[1] = SplitShortcut(conv, repeats=block.stride)
    return True


#: The exact fused layout that INT8 quantization uses by default (``layout='auto'``), per family:
#: the alternatives of :func:`fused_layouts` that the family table measured better than the
#: package's default fold (docs/int8.md, docs/int8_family_table.json: higher mean SQNR over the four
#: outputs, same float function): RepMobile ``identity-split`` (+0.6 / +1.0 dB at strides 16 / 32),
#: RepNeXt M ``single-branch`` (+0.3 - 0.6 dB at every stride). Measured worse, so not used:
#: RepGhostNet ``identity-split``, RepNeXt ``norm-forward``. Families not listed keep ``default``.
INT8_LAYOUTS = {'RepMobile': 'identity-split', 'RepNeXt': 'single-branch'}
LAYOUT_CHOICES = ('auto', 'default')


def prepare_int8_fusion(model: nn.Module, layout: str = 'auto') -> None:
    """Before fusing a training-form ``model`` for INT8 with ``layout='auto'``: RepNeXt backbones fuse
    straight to level 2 (``single_branch``), with each block norm folded into the one 11x11 kernel -- the
    ``single-branch`` layout the family table measured. (Fusing to level 1 first would fold the norm
    forward into the channel mixer, the faster float layout, and :func:`apply_int8_layout` would then make
    level 2 from that.) Fused backbones are left as they are."""
    from ..models.repnext import RepNeXt
    if layout != 'auto' or INT8_LAYOUTS.get('RepNeXt') != 'single-branch':
        return
    for _, backbone in find_rep_backbones(model):
        if isinstance(backbone, RepNeXt) and not backbone.deploy:
            backbone.single_branch = True


@torch.no_grad()
def apply_int8_layout(model: nn.Module, layout: str = 'auto') -> List[Tuple[str, str]]:
    """Put every (already fused) re-parameterizable backbone of ``model`` into the INT8-friendlier
    exact layout of :data:`INT8_LAYOUTS` (``layout='auto'``; ``'default'``: leave it as fused), in
    place: RepMobile blocks keep their shortcut as an Add (:func:`_split_repmobile_block`), RepNeXt
    at level 1 goes to level 2 (``to_single_branch``). The float function does not change (to
    float rounding). Returns ``(backbone label, layout used)`` per backbone."""
    from ..models.repmobile import RepMobileBlock
    from ..models.repnext import RepNeXt
    if layout not in LAYOUT_CHOICES:
        raise ValueError(f'layout must be one of {LAYOUT_CHOICES}, got {layout!r}')
    used = []
    for name, backbone in find_rep_backbones(model):
        label = f'{name or "model"} ({type(backbone).__name__})'
        if not backbone.deploy:
            raise UnfusedModelError(f'{label} is not fused: fuse before choosing its INT8 layout')
        choice = INT8_LAYOUTS.get(type(backbone).__name__, 'default') if layout == 'auto' else 'default'
        if choice == 'single-branch' and isinstance(backbone, RepNeXt):
            backbone.to_single_branch()        # level 1 -> 2; E forms (and level 2) are single-branch already
        elif choice == 'identity-split':
            for block in backbone.modules():
                if isinstance(block, RepMobileBlock):
                    _split_repmobile_block(block)
        used.append((label, choice))
    return used


# -- the per-family table ----------------------------------------------------------------------
FAMILY_SPECS = ('RepGhostNet:1.0x', 'RepGhostNetV2:S', 'MobileNetV4:S', 'RepNeXt:M0', 'RepNeXt:M0E', 'RepMobile:S')


def fused_layouts(model: nn.Module) -> Dict[str, nn.Module]:
    """The exact fused layouts this package can build for a (BN-calibrated, training-form) backbone:
    always ``default`` (``rep_backbones.fuse``); RepNeXt M also ``single-branch`` (level 2: the
    identity chunk and the three kernels merged into one DW 11x11), RepNeXt M and E also
    ``norm-forward`` (:func:`repnext_norm_forward`); RepGhostNet and RepMobile also
    ``identity-split`` (:func:`identity_split`). Each is a fused deep copy, in eval mode."""
    import copy

    from .. import fuse
    from ..models.repnext import RepNeXt
    layouts = {'default': fuse(copy.deepcopy(model).eval())}
    if isinstance(model, RepNeXt):
        if not model.single_branch:
            layouts['single-branch'] = copy.deepcopy(model).eval().to_single_branch()
        layouts['norm-forward'] = fuse(repnext_norm_forward(copy.deepcopy(model)).eval())
    split = identity_split(model)
    if split is not None:
        layouts['identity-split'] = split
    return layouts


def measure_fused(module: nn.Module, calib: Sequence[np.ndarray], evals: Sequence[np.ndarray], workdir: PathLike,
                  tag: str, threads: int = 2, timing=None, range_images: int = 0, progress: bool = False) -> dict:
    """Export ``module`` (fused, eval), quantize it and measure: ``sqnr_db`` / ``max_abs`` per output
    on ``evals``; with ``timing`` (a :class:`~.benchmark.Settings`: warm-up, interleaved rounds) the
    median / p90 latency of eager PyTorch, fp32 onnxruntime and INT8 onnxruntime on ``evals[0]``;
    with ``range_images`` the :func:`range_report` on that many of ``evals``."""
    from .benchmark import interleaved, summarize
    from .onnx_export import export_onnx
    fp32_path = os.path.join(workdir, f'{tag}.fp32.onnx')
    int8_path = os.path.join(workdir, f'{tag}.int8.onnx')
    export_onnx(module, torch.from_numpy(evals[0]), fp32_path)
    quantize_onnx(fp32_path, int8_path, calib, progress=progress)
    fp32, int8 = quiet_session(fp32_path, threads), quiet_session(int8_path, threads)
    parity = parity_report(fp32, int8, evals)
    result = dict(outputs=[dataclasses.asdict(p) for p in parity])
    if timing is not None:
        x = torch.from_numpy(evals[0])
        feed = {fp32.get_inputs()[0].name: evals[0]}
        with torch.inference_mode():
            times = interleaved({'fp32 eager': lambda: module(x), 'fp32 ort': lambda: fp32.run(None, feed),
                                 'int8 ort': lambda: int8.run(None, feed)}, timing)
        result['latency'] = {name: summarize(t, 1) for name, t in times.items()}
    if range_images:
        result['ranges'] = range_report(fp32_path, int8_path, evals[:range_images])
    return result


def family_table(specs: Sequence[str] = FAMILY_SPECS, settings=None, n_calib: int = 8, n_eval: int = 4,
                 data_root: Optional[PathLike] = None, seed: int = 0, top_k: int = 3,
                 progress: bool = True) -> List[dict]:
    """Measure every backbone of ``specs`` (the docs/int8.md table), one dict per backbone.

    ``settings``: a :class:`~.benchmark.Settings` (input ``shape``, ``threads``, timing rounds;
    default 512x512, 2 threads, 3 warm-up calls, 5 rounds of 2 interleaved calls). Setting: weights
    from PyTorch's default init after ``torch.manual_seed(seed)``, BatchNorm from
    :func:`calibrate_bn` on the ``n_calib`` toy-COCO training images; quantization calibrated on the
    same images; SQNR on ``n_eval`` toy-COCO validation images (``data_root``, default
    ``data/toy_quant_HxW``, generated at the input size); ImageNet normalisation; batch 1. As a
    sensitivity check the same weights with BatchNorm as initialised (identity) are quantized too
    (``init_bn_outputs``), and as a precision diagnostic the default layout with 16-bit activations
    (``a16w8_outputs``: what is left is the int8 weights' share of the error).
    """
    from tqdm import tqdm

    from .. import fuse
    from .benchmark import Settings
    from .build import build_from_spec
    settings = Settings() if settings is None else settings
    shape, threads = tuple(settings.shape), settings.threads
    root = data_root or f'data/toy_quant_{shape[0]}x{shape[1]}'
    train_dir, val_dir = toy_image_folders(root, n_calib, n_eval, shape)
    calib = load_inputs(list_images(train_dir)[:n_calib], shape, imagenet_preprocess)
    evals = load_inputs(list_images(val_dir)[:n_eval], shape, imagenet_preprocess)
    bn_batches = [torch.from_numpy(np.concatenate(calib[i:i + 4])) for i in range(0, len(calib), 4)]
    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for spec in tqdm(specs, desc='family table', unit='net', disable=not progress):
            tag = spec.replace(':', '_')
            torch.manual_seed(seed)
            model = calibrate_bn(build_from_spec(spec), bn_batches, seed)
            layouts = fused_layouts(model)
            x = torch.from_numpy(evals[0])
            with torch.no_grad():
                ref = layouts['default'](x)
            torch.manual_seed(seed)                        # same weights, BatchNorm as initialised
            init_bn = measure_fused(fuse(build_from_spec(spec)), calib, evals, workdir, 'init_bn', threads)
            row = dict(spec=spec, init_bn_outputs=init_bn['outputs'], layouts={})
            for name, module in layouts.items():
                with torch.no_grad():
                    out = module(x)
                diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(out, ref))
                measured = measure_fused(module, calib, evals, workdir, f'{tag}_{name}',
                                         threads, settings if name == 'default' else None,
                                         1 if name == 'default' else 0)
                measured['rel_diff_vs_default'] = diff
                if 'ranges' in measured:
                    worst = measured['ranges'][:top_k]
                    worst += [r for r in measured['ranges'] if r.kind == 'weight' and r not in worst][:2]
                    measured['ranges'] = [dataclasses.asdict(r) for r in worst]
                row['layouts'][name] = measured
            fp32, a16 = (os.path.join(workdir, f'{tag}_default.{kind}.onnx') for kind in ('fp32', 'a16w8'))
            quantize_onnx(fp32, a16, calib, progress=False, activation_bits=16)
            row['a16w8_outputs'] = [dataclasses.asdict(p) for p in parity_report(
                quiet_session(fp32, threads), quiet_session(a16, threads), evals)]
            rows.append(row)
    return rows


def format_family_table(rows: Sequence[dict]) -> str:
    """Markdown: latency and SQNR table, SQNR per exact layout, worst quantized tensors per backbone."""
    def ms(lat: dict) -> str:
        return f"{lat['median_ms']:.1f} / {lat['p90_ms']:.1f}"

    def sqnr(outputs: Sequence[dict]) -> str:
        return ' / '.join(f"{o['sqnr_db']:.1f}" for o in outputs)

    lines = ['| backbone | fp32 eager fused (ms) | fp32 onnxruntime (ms) | INT8 onnxruntime (ms) | INT8 speed-up vs '
             'fp32 onnxruntime | SQNR (dB), stride 4 / 8 / 16 / 32 | same, 16-bit activations | same, BN at init |',
             '|---|---|---|---|---|---|---|---|']
    for row in rows:
        d = row['layouts']['default']
        lat = d['latency']
        lines.append(f"| {row['spec']} | {ms(lat['fp32 eager'])} | {ms(lat['fp32 ort'])} | {ms(lat['int8 ort'])} | "
                     f"{lat['fp32 ort']['median_ms'] / lat['int8 ort']['median_ms']:.2f}x | {sqnr(d['outputs'])} | "
                     f"{sqnr(row['a16w8_outputs'])} | {sqnr(row['init_bn_outputs'])} |")
    lines += ['', 'Exact fused layouts (fp32: max |out - default| / max |default|; SQNR of INT8 vs fp32):', '',
              '| backbone | layout | fp32 rel. diff vs default | SQNR (dB), stride 4 / 8 / 16 / 32 |',
              '|---|---|---|---|']
    for row in rows:
        for name, d in row['layouts'].items():
            lines.append(f"| {row['spec']} | {name} | {d['rel_diff_vs_default']:.1e} | {sqnr(d['outputs'])} |")
    lines += ['', 'Range report of each default layout (1 image): the tensors with the lowest single-step SQNR, '
              'then the two weights with the lowest; columns: kind, SQNR of its own quantization, SQNR '
              'accumulated up to it (activations), float range, channel spread, tensor:', '']
    for row in rows:
        lines.append(f"{row['spec']}:")
        lines += ['  ' + RangeRow(**r).line() for r in row['layouts']['default']['ranges']]
    return '\n'.join(lines)
