"""A model's forms end to end: a batch from the test pipeline in, final predictions (data samples) out.

A PyTorch form is the mm model's own ``test_step`` (data preprocessor, network, post-processing). A backend
form runs the data preprocessor in PyTorch, the exported network in a :class:`~.runtimes.Session`, and the
model's own post-processing in PyTorch:

* single-stage detectors: the whole network (backbone, neck, head) in the backend; anchors, decoding, score
  threshold, NMS and rescaling by ``bbox_head.predict_by_feat``;
* two-stage detectors (Faster / Mask R-CNN): backbone and neck in the backend; the RPN head, RoI align, box
  and mask heads in PyTorch (``rpn_head.predict``, ``roi_head.predict``);
* segmentors: the whole network to the decode head's logits (1/4 size) in the backend; resize, crop and
  arg-max by ``decode_head.predict_by_feat`` and ``postprocess_result``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import itertools
from typing import Callable, Dict, Sequence

import torch
from torch import nn

Predictor = Callable[[dict], list]


def kind(model: nn.Module) -> str:
    """``'two_stage'``, ``'single_stage'`` or ``'segmentor'``."""
    if hasattr(model, 'decode_head'):
        return 'segmentor'
    if hasattr(model, 'roi_head') and hasattr(model, 'rpn_head'):
        return 'two_stage'
    if hasattr(model, 'bbox_head'):
        return 'single_stage'
    raise ValueError(f'{type(model).__name__} is neither an mmdet detector nor an mmseg segmentor')


def export_part(model: nn.Module) -> str:
    """What the backend runs (:class:`~rep_backbones.io.build.TensorModeWrapper` part)."""
    return 'features' if kind(model) == 'two_stage' else 'full'


BACKEND_STAGES = {'single_stage': 'backbone, neck and head in the backend; decoding and NMS in PyTorch',
                  'two_stage': 'backbone and neck in the backend; RPN, RoI align, box and mask heads in PyTorch',
                  'segmentor': 'backbone, neck and decode head in the backend; resize and arg-max in PyTorch'}


def pytorch_predictor(model: nn.Module) -> Predictor:
    """The mm model's own ``test_step``."""
    def predict(data: dict) -> list:
        with torch.no_grad():
            return model.test_step(copy.copy(data))
    return predict


def backend_predictor(model: nn.Module, session) -> Predictor:
    """``session`` (``run(x) -> [arrays]``, the exported :func:`export_part` of ``model``) inside ``model``'s own
    preprocessing and post-processing."""
    form = kind(model)

    def predict(data: dict) -> list:
        with torch.no_grad():
            data = model.data_preprocessor(copy.copy(data), False)
            samples = data['data_samples']
            outs = [torch.from_numpy(o) for o in session.run(data['inputs'].float().numpy())]
            metas = [s.metainfo for s in samples]
            if form == 'segmentor':
                return model.postprocess_result(model.decode_head.predict_by_feat(outs[0], metas), samples)
            if form == 'two_stage':
                proposals = model.rpn_head.predict(tuple(outs), samples, rescale=False)
                results = model.roi_head.predict(tuple(outs), proposals, samples, rescale=True)
            else:
                levels = len(model.bbox_head.prior_generator.strides)
                groups = [outs[i:i + levels] for i in range(0, len(outs), levels)]
                results = model.bbox_head.predict_by_feat(*groups, batch_img_metas=metas, rescale=True)
            return model.add_pred_to_datasample(samples, results)
    return predict


def primary_metric(model: nn.Module, metrics: Dict[str, float]) -> float:
    """The number accuracy control bounds, in [0, 1]: bbox mAP (detectors), mask mAP (Mask R-CNN), mIoU / 100
    (segmentors)."""
    if kind(model) == 'segmentor':
        return metrics['mIoU'] / 100.0
    key = 'segm_mAP' if any(k.endswith('segm_mAP') for k in metrics) else 'bbox_mAP'
    return next(v for k, v in metrics.items() if k.endswith('/' + key) or k == key)


def evaluate(model: nn.Module, predictors: Dict[str, Predictor], dataset, batches: Sequence[dict],
             progress: bool = False) -> Dict[str, Dict[str, float]]:
    """The config's own ``test_evaluator`` (CocoMetric, IoUMetric, ...) on every predictor's predictions for
    ``batches`` (from :func:`~.data.evaluation_set`); name -> the evaluator's metrics."""
    import importlib

    from mmengine.evaluator import Evaluator
    from mmengine.registry import DefaultScope
    from tqdm import tqdm

    from .data import task_scope
    scope = task_scope(model)
    metrics_registry = importlib.import_module(f'{scope}.registry').METRICS
    evaluators = {}
    with DefaultScope.overwrite_default_scope(scope), contextlib.redirect_stdout(io.StringIO()):
        for name in predictors:
            cfgs = model.cfg.test_evaluator
            cfgs = cfgs if isinstance(cfgs, (list, tuple)) else [cfgs]
            evaluators[name] = Evaluator([metrics_registry.build(copy.deepcopy(c)) for c in cfgs])
            evaluators[name].dataset_meta = dataset.metainfo
    for data in tqdm(batches, desc='evaluation', unit='img', disable=not progress, leave=False):
        for name, predict in predictors.items():
            evaluators[name].process(data_samples=predict(data), data_batch=data)
    with contextlib.redirect_stdout(io.StringIO()):      # pycocotools' progress prints
        return {name: {k: float(v) for k, v in ev.evaluate(len(batches)).items()}
                for name, ev in evaluators.items()}


def latency(predictors: Dict[str, Predictor], pipeline: Callable[[dict], dict], files: Sequence[str], rounds: int,
            progress: bool = False) -> Dict[str, dict]:
    """End-to-end latency, image file to predictions: ``pipeline`` (:func:`~.data.deploy_pipeline`: load,
    resize, pack) is part of every call. All forms interleaved (:func:`~.timing.interleaved`), one call = one
    image, each round over all ``files``; name -> :func:`~.timing.summarize` (median / p90 ms)."""
    from mmengine.dataset import pseudo_collate

    from .timing import interleaved, summarize

    def one(predict: Predictor):
        cycle = itertools.cycle(files)
        return lambda: predict(pseudo_collate([pipeline(dict(img_path=str(next(cycle)), img_id=0))]))
    times = interleaved({name: one(p) for name, p in predictors.items()}, rounds, len(files), warmup=1,
                        progress=progress)
    return {name: summarize(t) for name, t in times.items()}
