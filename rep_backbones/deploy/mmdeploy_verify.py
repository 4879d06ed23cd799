"""Checking an mmdeploy graph against PyTorch (the export itself is :mod:`rep_backbones.deploy.mmdeploy_compat`).

:func:`build_models` and :func:`compare_predictions`: onnxruntime vs PyTorch through mmdeploy's task processor;
:func:`rewritten_predict`: what the graph should compute; :func:`mmdet_postprocessing_as_mmdeploy`: mmdet
post-processing made to follow mmdeploy's two-stage rules.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch


# -- what the graph computes, run in PyTorch, and mmdet made to post-process as mmdeploy does ---------------------
def rewritten_predict(model, deploy_cfg, inputs: torch.Tensor, data_samples) -> Tuple[torch.Tensor, ...]:
    """mmdeploy's rewritten model run eagerly in PyTorch, as ``torch2onnx`` traces it (``patch_model`` and a
    ``RewriterContext`` with the deploy config's backend and opset, ``mode='predict'``): the raw outputs the
    exported graph should give for ``inputs`` (the data preprocessor's batch), e.g. ``(dets, labels[, masks])``
    in the resized image. Why: it separates "the graph is not what mmdeploy meant" (graph vs this) from "mmdeploy
    post-processes differently from mmdet" (this vs the mmdet model).

    ``model`` (a PyTorch model from :func:`build_models`) and ``data_samples`` are copied, not changed.
    Outside an export ``torch.onnx.is_in_onnx_export()`` is false; mmdeploy's NMS then runs mmcv's ``nms``
    per class, and its top-k steps sort instead of ``TopK``: the same values, up to the order of equal scores.
    """
    import copy

    from mmdeploy.core import RewriterContext, patch_model
    from mmdeploy.utils import IR, get_backend, get_ir_config, load_config
    deploy_cfg = load_config(deploy_cfg)[0]
    backend = get_backend(deploy_cfg).value
    opset = get_ir_config(deploy_cfg).get('opset_version', 11)
    patched_model = patch_model(copy.deepcopy(model), cfg=deploy_cfg, backend=backend, ir=IR.ONNX)
    with RewriterContext(cfg=deploy_cfg, backend=backend, ir=IR.ONNX, opset=opset), torch.no_grad():
        return patched_model(inputs, copy.deepcopy(data_samples), mode='predict')


@contextlib.contextmanager
def mmdet_postprocessing_as_mmdeploy() -> Iterator[None]:
    """Inside the ``with`` block, mmdet's ``RPNHead`` and ``BBoxHead`` (Faster / Mask R-CNN) post-process as
    mmdeploy 1.3.1's rewriters do, so that the PyTorch model can be compared with an mmdeploy graph
    (docs/deploy.md, 'Mask R-CNN'). For comparisons, not for evaluation. Both class attributes are restored on
    exit, also when the block raises:

    1. RPN (``RPNHead._bbox_post_process``): one NMS over the proposals of all levels (mmdet: one per level),
       and no ``min_bbox_size`` filter (mmdet drops proposals of zero width or height).
    2. R-CNN box head (``BBoxHead._predict_by_feat_single``, class-specific regression): every class of a RoI
       gets the box regressed for the RoI's highest-scoring class (mmdet: each class its own box).
    3. RPN: when fewer than ``max_per_img`` proposals survive NMS, one all-zero proposal (box ``[0, 0, 0, 0]``,
       score 0) follows them: mmdeploy's ``select_nms_index`` appends that row to every NMS result (so that no
       tensor is empty) and its top-k then keeps it. The RoI head scores it like any RoI, so the graph can
       output a zero-size detection at ``[0, 0, 0, 0]`` (docs/deploy.md).

    Subclasses that override these methods (SABL, cascade RPN stages, ...) are not changed.
    """
    import copy

    import torch.nn.functional as F
    from mmdet.models.dense_heads.rpn_head import RPNHead
    from mmdet.models.roi_heads.bbox_heads.bbox_head import BBoxHead
    from mmengine.structures import InstanceData

    rpn_post, bbox_single = RPNHead.__dict__['_bbox_post_process'], BBoxHead.__dict__['_predict_by_feat_single']

    def rpn_post_all_levels(self, results, cfg, rescale=False, with_nms=True, img_meta=None):
        results.level_ids = torch.zeros_like(results.level_ids)   # batched_nms: one group = one NMS
        cfg = copy.deepcopy(cfg)
        cfg.min_bbox_size = -1                                     # < 0: mmdet skips the size filter
        proposals = rpn_post(self, results, cfg, rescale, with_nms, img_meta)
        if with_nms and len(proposals) < cfg.max_per_img:        # rule 3: the all-zero row mmdeploy appends
            pad = InstanceData(**{key: value.new_zeros((1,) + value.shape[1:]) for key, value in proposals.items()})
            proposals = InstanceData.cat([proposals, pad])
        return proposals

    def bbox_single_top_class_box(self, roi, cls_score, bbox_pred, img_meta, rescale=False, rcnn_test_cfg=None):
        if bbox_pred is not None and cls_score is not None and not self.reg_class_agnostic and len(roi):
            scores = (self.loss_cls.get_activation(cls_score) if self.custom_cls_channels
                      else F.softmax(cls_score, dim=-1))
            top = scores[:, :self.num_classes].argmax(dim=1)      # as mmdeploy: background excluded
            deltas = bbox_pred.view(len(bbox_pred), self.num_classes, -1)
            bbox_pred = deltas[torch.arange(len(deltas)), top][:, None].expand_as(deltas).reshape(len(deltas), -1)
        return bbox_single(self, roi, cls_score, bbox_pred, img_meta, rescale, rcnn_test_cfg)

    try:
        RPNHead._bbox_post_process = rpn_post_all_levels
        BBoxHead._predict_by_feat_single = bbox_single_top_class_box
        yield
    finally:
        RPNHead._bbox_post_process, BBoxHead._predict_by_feat_single = rpn_post, bbox_single


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
    partner within 1 pixel or at IoU >= 0.5), ``max_box_diff`` (pixels, original image), ``max_score_diff``,
    ``min_box_iou``, ``zero_area`` (the reference's matched detections whose box and partner's box have no area)
    and, with masks, ``min_mask_iou`` (binary masks,
    an empty pair counts as 1; zero-area pairs are left out: pasting a mask into a box of no area divides by
    zero, mmdet then pastes one pixel and mmdeploy the whole image). Segmentation: ``pixel_agreement``
    (fraction of equal labels) and ``num_pixels``.
    """
    if 'pred_sem_seg' in reference:
        a, b = reference.pred_sem_seg.data, other.pred_sem_seg.data
        if a.shape != b.shape:
            raise ValueError(f'label maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}')
        return dict(pixel_agreement=float((a == b).float().mean()), num_pixels=a.numel())
    ref, oth = reference.pred_instances, other.pred_instances
    out = dict(num_reference=len(ref), num_other=len(oth), unmatched=0, max_box_diff=0.0, max_score_diff=0.0,
               min_box_iou=1.0, zero_area=0)
    if 'masks' in ref:
        out['min_mask_iou'] = 1.0
    for side, (first, second) in enumerate(((ref, oth), (oth, ref))):
        for i, j in _greedy_match(first, second, top_k):
            if j is None:
                out['unmatched'] += 1
                continue
            out['max_box_diff'] = max(out['max_box_diff'], float((first.bboxes[i] - second.bboxes[j]).abs().max()))
            out['max_score_diff'] = max(out['max_score_diff'], float((first.scores[i] - second.scores[j]).abs()))
            if _area(first.bboxes[i]) <= 0 and _area(second.bboxes[j]) <= 0:
                out['zero_area'] += int(side == 0)   # counted once per pair, from the reference's side
                continue
            out['min_box_iou'] = min(out['min_box_iou'], float(_iou(first.bboxes[i:i + 1], second.bboxes[j:j + 1])))
            if 'min_mask_iou' in out:
                out['min_mask_iou'] = min(out['min_mask_iou'], _mask_iou(first.masks[i], second.masks[j]))
    return out


def _area(box: torch.Tensor) -> float:
    return float((box[2] - box[0]).clamp(min=0) * (box[3] - box[1]).clamp(min=0))


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
