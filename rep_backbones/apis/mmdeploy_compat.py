"""Run mmdeploy 1.3.1's ONNX export on this stack (torch 2.14), with every change in one visible place.

mmdeploy 1.3.1 (2023-12, its last release) is used as it is — its rewriters, NMS and RoIAlign
symbolics, task processors and onnxruntime wrapper. Two things in torch changed since then;
:func:`patched` bridges them for the duration of an export and undoes them afterwards (nothing in
``site-packages`` is edited):

1. ``torch.onnx.export`` defaults to ``dynamo=True`` since torch 2.9. The dynamo exporter needs
   ``onnxscript`` and traces with ``torch.export``, which bypasses mmdeploy's function and symbolic
   rewriters (NMS, RoIAlign, the detector heads). mmdeploy calls ``torch.onnx.export`` without
   ``dynamo``: the patch passes ``dynamo=False`` (the TorchScript exporter mmdeploy was written for)
   when the caller did not choose.
2. ``torch.onnx.symbolic_opset9._cast_Long`` (a deprecated ``aten::_cast_Long`` symbolic) no longer
   exists in torch 2.14. mmdeploy's RoIAlign symbolic
   (``mmdeploy/mmcv/ops/roi_align.py``, every two-stage detector) imports it to cast the RoI batch
   indices to int64; the patch provides it as the ``Cast(to=INT64)`` node it used to emit.

Use::

    from rep_backbones.apis.mmdeploy_compat import torch2onnx
    torch2onnx(img, work_dir, 'end2end.onnx', deploy_cfg, model_cfg, checkpoint)   # mmdeploy's API

or wrap any mmdeploy call in ``with patched(): ...``.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.onnx
import torch.onnx.symbolic_opset9 as _opset9


def _cast_long(g, input, non_blocking):
    """The removed ``symbolic_opset9._cast_Long(g, input, non_blocking)``: an ONNX ``Cast`` to int64."""
    return g.op('Cast', input, to_i=torch._C._onnx.TensorProtoDataType.INT64)


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """Apply the changes of the module docstring inside the ``with`` block, then undo them."""
    export = torch.onnx.export
    had_cast_long = hasattr(_opset9, '_cast_Long')
    if 'dynamo' in inspect.signature(export).parameters:
        @functools.wraps(export)
        def export_torchscript(*args, **kwargs):
            kwargs.setdefault('dynamo', False)
            return export(*args, **kwargs)
        torch.onnx.export = export_torchscript
    if not had_cast_long:
        _opset9._cast_Long = _cast_long
    try:
        yield
    finally:
        torch.onnx.export = export
        if not had_cast_long:
            del _opset9._cast_Long


def torch2onnx(img, work_dir: str, save_file: str, deploy_cfg, model_cfg, model_checkpoint=None,
               device: str = 'cpu') -> str:
    """``mmdeploy.apis.torch2onnx`` inside :func:`patched`; returns the path of the ONNX file.

    Args are mmdeploy's: ``img`` (path or HxWx3 array) is run through the model config's test
    pipeline to trace the graph; ``deploy_cfg`` is an mmdeploy config (``configs/mmdeploy/``),
    ``model_cfg`` / ``model_checkpoint`` the model config and weights (a fused checkpoint with its
    ``configs/deploy/*_deploy.py`` config, or a training config and checkpoint: mmdeploy calls
    ``model.backbone.switch_to_deploy()`` after loading).
    """
    import os.path as osp

    from mmdeploy.apis import torch2onnx as mmdeploy_torch2onnx
    with patched():
        mmdeploy_torch2onnx(img, work_dir, save_file, deploy_cfg=deploy_cfg, model_cfg=model_cfg,
                            model_checkpoint=model_checkpoint, device=device)
    return osp.join(work_dir, save_file)


# -- the route from a config and checkpoint to onnxruntime predictions, through mmdeploy's task processor --------
def load_model_config(config, cfg_options: Optional[dict] = None):
    """The model config as mmdeploy should see it: ``cfg_options`` merged, and ``test_pipeline`` set to the
    test dataloader's pipeline.

    mmdeploy builds its inputs from the top-level ``test_pipeline``; configs that give their test dataloader
    another pipeline (the toy configs here inherit mmdet's 1333x800 ``test_pipeline`` and test at 192x160)
    would otherwise be exported and checked at a size that ``tools/test.py`` never uses.
    """
    from mmengine.config import Config
    cfg = config.copy() if isinstance(config, Config) else Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    dataloader = cfg.get('test_dataloader') or {}
    pipeline = dataloader.get('dataset', {}).get('pipeline')
    if pipeline is not None:
        cfg.test_pipeline = pipeline
    if cfg.get('test_pipeline') is None:
        raise ValueError('the model config has neither test_pipeline nor test_dataloader.dataset.pipeline: '
                         'mmdeploy needs one to turn an image into the model input')
    return cfg


def build_models(deploy_cfg, model_cfg, checkpoint: Optional[str], backend_files: Sequence[str],
                 device: str = 'cpu'):
    """``(task_processor, pytorch_model, backend_model)`` as mmdeploy's ``tools/test.py`` builds them.

    ``pytorch_model`` is mmdeploy's ``build_pytorch_model`` (checkpoint loaded, then
    ``backbone.switch_to_deploy()``), ``backend_model`` its ``End2EndModel`` over ``backend_files``
    (onnxruntime for the configs in ``configs/mmdeploy/``): both take ``task_processor.create_input``'s
    data in ``test_step`` and return mmdet / mmseg data samples, post-processed and rescaled alike.
    """
    from mmdeploy.apis import build_task_processor
    from mmdeploy.utils import load_config
    deploy_cfg, model_cfg = load_config(deploy_cfg, model_cfg)
    processor = build_task_processor(model_cfg, deploy_cfg, device)
    pytorch_model = processor.build_pytorch_model(checkpoint)
    backend_model = processor.build_backend_model(
        list(backend_files), data_preprocessor_updater=processor.update_data_preprocessor)
    return processor, pytorch_model, backend_model


def compare_predictions(reference, other, top_k: Optional[int] = None) -> Dict[str, float]:
    """Differences between two predictions for one image (mmdet ``DetDataSample`` or mmseg ``SegDataSample``).

    Detection: the ``top_k`` highest-scoring detections of each side (all when ``None``) are matched
    greedily, best score first, to the nearest same-label detection of the other side.
    Returns ``num_reference``, ``num_other``, ``unmatched`` (detections of either side's top-k without a
    partner within 1 pixel or at IoU >= 0.5), ``max_box_diff`` (pixels, original image), ``max_score_diff``, ``min_box_iou``
    and, with masks, ``min_mask_iou`` (binary masks, an empty pair counts as 1). Segmentation:
    ``pixel_agreement`` (fraction of equal labels) and ``num_pixels``.
    """
    if 'pred_sem_seg' in reference:
        a, b = reference.pred_sem_seg.data, other.pred_sem_seg.data
        if a.shape != b.shape:
            raise ValueError(f'label maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}')
        return dict(pixel_agreement=float((a == b).float().mean()), num_pixels=a.numel())
    ref, oth = reference.pred_instances, other.pred_instances
    out = dict(num_reference=len(ref), num_other=len(oth), unmatched=0, max_box_diff=0.0, max_score_diff=0.0,
               min_box_iou=1.0)
    if 'masks' in ref:
        out['min_mask_iou'] = 1.0
    for first, second in ((ref, oth), (oth, ref)):
        for i, j in _greedy_match(first, second, top_k):
            if j is None:
                out['unmatched'] += 1
                continue
            out['max_box_diff'] = max(out['max_box_diff'], float((first.bboxes[i] - second.bboxes[j]).abs().max()))
            out['max_score_diff'] = max(out['max_score_diff'], float((first.scores[i] - second.scores[j]).abs()))
            out['min_box_iou'] = min(out['min_box_iou'], float(_iou(first.bboxes[i:i + 1], second.bboxes[j:j + 1])))
            if 'min_mask_iou' in out:
                out['min_mask_iou'] = min(out['min_mask_iou'], _mask_iou(first.masks[i], second.masks[j]))
    return out


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from mmdet.structures.bbox import bbox_overlaps
    return bbox_overlaps(a.float(), b.float())


def _greedy_match(first, second, top_k: Optional[int]) -> List[Tuple[int, Optional[int]]]:
    """Pairs ``(i, j)``: each of ``first``'s top-k detections (by score) with the unused same-label detection
    of ``second`` nearest to it (largest coordinate difference), accepted when within 1 pixel or at IoU >= 0.5
    (IoU alone would refuse equal boxes of zero area, which clipping at the image border makes); else ``None``."""
    order = torch.argsort(first.scores, descending=True, stable=True)[:top_k]
    used, pairs = set(), []
    for i in order.tolist():
        candidates = [j for j in torch.nonzero(second.labels == first.labels[i]).flatten().tolist() if j not in used]
        best = None
        if candidates:
            dist = (second.bboxes[candidates] - first.bboxes[i]).abs().amax(dim=1)
            j = candidates[int(dist.argmin())]
            if float(dist.min()) <= 1.0 or float(_iou(first.bboxes[i:i + 1], second.bboxes[j:j + 1])) >= 0.5:
                best = j
                used.add(j)
        pairs.append((i, best))
    return pairs


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union
