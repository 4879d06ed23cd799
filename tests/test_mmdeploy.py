"""Deployment through mmdeploy (docs/deploy.md), end to end, for RetinaNet, Mask R-CNN and Semantic FPN with a
RepGhostNet 1.0x backbone (the toy configs):

training-form checkpoint (seeded random weights and BN statistics) -> ``tools/fuse_checkpoint.py`` ->
deploy form (``model.backbone.deploy=True``) -> mmdeploy ``torch2onnx`` through
``rep_backbones.apis.mmdeploy_compat`` with ``configs/mmdeploy/*`` -> one ONNX graph with post-processing ->
mmdeploy's onnxruntime ``End2EndModel``, compared with the fused PyTorch model on two seeded toy images of
different sizes (one graph, dynamic shapes): every detection (boxes, scores, labels, masks) or every pixel.

The images are sized so that the model input needs no padding (their resized sides are multiples of 32):
with padding, mmdeploy's graph clips boxes to the padded input instead of the image (docs/deploy.md).
"""
from __future__ import annotations

import copy
import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from rep_backbones.apis import mmdeploy_compat
from rep_backbones.apis.build import build_model_from_config


ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / 'configs' / 'mmdeploy'
# (model config, mmdeploy deploy config, image sizes (H, W), operators the graph must contain)
CASES = {
    # toy test pipeline: Resize to fit (192, 160) keeping the ratio -> 320x384 is halved to 160x192,
    # 96x192 is kept: both need no padding, and the second exercises the dynamic input size.
    'retinanet': ('configs/toy/toy_retinanet_repghost_1_0x.py', 'detection_onnxruntime_dynamic.py',
                  [(320, 384), (96, 192)], {'NonMaxSuppression'}),
    'mask_rcnn': ('configs/toy/toy_mask_rcnn_repghost_1_0x.py', 'instance-seg_onnxruntime_dynamic.py',
                  [(160, 192), (96, 192)], {'NonMaxSuppression', 'RoiAlign'}),
    # toy test pipeline: Resize to fit (320, 256): both sizes are kept as they are.
    'semantic_fpn': ('configs/toy/toy_fpn_repghost_1_0x_ade20k.py', 'segmentation_onnxruntime_dynamic.py',
                     [(256, 320), (192, 320)], {'ArgMax'}),
}
# onnxruntime vs PyTorch, float32: the same detections, boxes within 0.01 pixel, scores within 1e-4.
BOX_TOL, SCORE_TOL, MASK_IOU_MIN = 1e-2, 1e-4, 0.99
# Each side's 50 best detections are matched among all of the other side's (100 at most, mmdet's max_per_img):
# random weights give many near-equal scores, and which of them make the 100th place is a coin toss.
TOP_K = 50
OPTIONS = {}


def _fuse_checkpoint_tool():
    spec = importlib.util.spec_from_file_location('fuse_checkpoint_tool', ROOT / 'tools' / 'fuse_checkpoint.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fuse_checkpoint


def _toy_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """HxWx3 uint8 BGR: a smooth random gradient with four filled rectangles of random colours."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([rng.uniform(40, 200) + rng.uniform(-60, 60) * (yy if c % 2 else xx) for c in range(3)], -1)
    for _ in range(4):
        y0, x0 = rng.integers(0, h - h // 4), rng.integers(0, w - w // 4)
        img[y0:y0 + rng.integers(h // 8, h // 3), x0:x0 + rng.integers(w // 8, w // 3)] = rng.uniform(0, 255, 3)
    return img.clip(0, 255).astype(np.uint8)


def _train_checkpoint(config: str, path: Path) -> str:
    """A training-form checkpoint of ``config``: seeded random weights, BN statistics and affine parameters
    drawn within 20 % of the identity (so that fusion has something to fold, while the features stay in the
    range that gives the heads unsaturated scores and boxes inside the image, as a trained model's do)."""
    torch.manual_seed(0)
    model = build_model_from_config(str(ROOT / config))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                module.running_mean.uniform_(-0.05, 0.05)
                module.running_var.uniform_(0.95, 1.05)
                module.weight.uniform_(0.95, 1.05)
                module.bias.uniform_(-0.05, 0.05)
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, path)
    return str(path)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """Per case, built once: ``(work_dir, train ckpt, fused ckpt, onnx file, deploy model cfg, deploy cfg)``."""
    cache = {}

    def get(name):
        if name not in cache:
            config, deploy_cfg, sizes, _ = CASES[name]
            work = tmp_path_factory.mktemp(name)
            train = _train_checkpoint(config, work / 'train.pth')
            fused = str(work / 'fused.pth')
            _fuse_checkpoint_tool()(str(ROOT / config), train, fused)
            model_cfg = mmdeploy_compat.load_model_config(ROOT / config, {'model.backbone.deploy': True, **OPTIONS.get(name, {})})
            img = _toy_image(np.random.default_rng(0), *sizes[0])
            onnx_file = mmdeploy_compat.torch2onnx(img, str(work), 'end2end.onnx', str(DEPLOY / deploy_cfg),
                                                   model_cfg, fused)
            cache[name] = (work, train, fused, onnx_file, model_cfg, str(DEPLOY / deploy_cfg))
        return cache[name]
    return get


@pytest.mark.parametrize('name', list(CASES))
def test_onnxruntime_matches_fused_pytorch(name, exported):
    """mmdeploy's ONNX graph (with post-processing) in onnxruntime predicts what the fused PyTorch model
    predicts, for two image sizes, with one graph."""
    work, _, fused, onnx_file, model_cfg, deploy_cfg = exported(name)
    ops = Counter(node.op_type for node in onnx.load(onnx_file).graph.node)
    domains = {node.domain for node in onnx.load(onnx_file).graph.node}
    assert CASES[name][3] <= set(ops), f'{name}: post-processing missing from the graph: {dict(ops)}'
    assert ops['BatchNormalization'] == 0
    assert domains <= {'', 'ai.onnx'}, f'custom operator domains {domains}: plain onnxruntime could not run it'

    processor, pytorch_model, ort_model = mmdeploy_compat.build_models(deploy_cfg, model_cfg, fused, [onnx_file])
    assert pytorch_model.backbone.deploy
    rng = np.random.default_rng(1)
    for h, w in CASES[name][2]:
        data, _ = processor.create_input(_toy_image(rng, h, w))
        with torch.no_grad():   # each model on its own copy: test_step writes into the data samples
            ref, got = pytorch_model.test_step(copy.deepcopy(data))[0], ort_model.test_step(copy.deepcopy(data))[0]
        diff = mmdeploy_compat.compare_predictions(ref, got, top_k=TOP_K)
        print(f'{name} {h}x{w}: {diff}')
        if 'pred_instances' in ref: print(ref.pred_instances.scores[:8], got.pred_instances.scores[:8], ref.pred_instances.bboxes[:4], got.pred_instances.bboxes[:4], ref.pred_instances.labels[:8], got.pred_instances.labels[:8])  # DEBUG
        if name == 'semantic_fpn':
            assert diff['pixel_agreement'] == 1.0, diff
            continue
        assert diff['num_reference'] > 0, 'no detections: the comparison would be empty'
        assert diff['num_reference'] == diff['num_other'] and diff['unmatched'] == 0, diff
        assert diff['max_box_diff'] <= BOX_TOL and diff['max_score_diff'] <= SCORE_TOL, diff
        if name == 'mask_rcnn':
            assert diff['min_mask_iou'] >= MASK_IOU_MIN, diff
