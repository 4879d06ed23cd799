"""Deployment through mmdeploy (docs/deploy.md), end to end, for RetinaNet, Mask R-CNN and Semantic FPN with a
RepGhostNet 1.0x backbone (the toy configs):

training-form checkpoint (seeded random weights and BN statistics) -> ``tools/fuse_checkpoint.py`` ->
deploy form (``model.backbone.deploy=True``) -> mmdeploy ``torch2onnx`` through
``rep_backbones.apis.mmdeploy_compat`` with ``configs/mmdeploy/*`` -> one ONNX graph with post-processing ->
mmdeploy's onnxruntime ``End2EndModel``, compared with the fused PyTorch model on seeded toy images: the
traced one and new ones (detection: two sizes, one graph with dynamic shapes; segmentation: the traced size,
the only one at which the graph is exact, docs/deploy.md). Detections are matched (boxes, scores, labels,
masks); label maps compared pixel by pixel. Mask R-CNN's comparison is a strict xfail (docs/deploy.md).
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
                  [(320, 384), (96, 192)], {'NonMaxSuppression', 'RoiAlign'}),
    # toy test pipeline: Resize to fit (320, 256): kept as it is. One size only: at other sizes than the
    # traced one the graph differs from mmseg (docs/deploy.md, 'Semantic FPN').
    'semantic_fpn': ('configs/toy/toy_fpn_repghost_1_0x_ade20k.py', 'segmentation_onnxruntime_dynamic.py',
                     [(256, 320)], {'ArgMax'}),
}
# onnxruntime vs PyTorch, float32: the same detections, boxes within 0.01 pixel, scores within 1e-4.
BOX_TOL, SCORE_TOL, MASK_IOU_MIN = 1e-2, 1e-4, 0.99
# Each side's 50 best detections are matched among all of the other side's (100 at most, mmdet's max_per_img):
# random weights give many near-equal scores, and which of them make the 100th place is a coin toss.
TOP_K = 50
# label maps: all but arg-max near-ties of random logits (1 pixel in 81,920 measured)
SEG_AGREEMENT_MIN = 0.9999
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


def _traced_image(name: str) -> np.ndarray:
    """The image ``torch2onnx`` traces the graph with (the case's first size)."""
    return _toy_image(np.random.default_rng(0), *CASES[name][2][0])


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """Per case, built once: ``(train ckpt, fused ckpt, onnx file, deploy-form model cfg, mmdeploy cfg)``."""
    cache = {}

    def get(name):
        if name not in cache:
            config, deploy_cfg = CASES[name][:2]
            work = tmp_path_factory.mktemp(name)
            train = _train_checkpoint(config, work / 'train.pth')
            fused = str(work / 'fused.pth')
            _fuse_checkpoint_tool()(str(ROOT / config), train, fused)
            model_cfg = mmdeploy_compat.load_model_config(ROOT / config, {'model.backbone.deploy': True})
            deploy_cfg = str(DEPLOY / deploy_cfg)
            onnx_file = mmdeploy_compat.torch2onnx(_traced_image(name), str(work), 'end2end.onnx', deploy_cfg,
                                                   model_cfg, fused)
            cache[name] = (train, fused, onnx_file, model_cfg, deploy_cfg)
        return cache[name]
    return get


MASK_RCNN_DIFFERS = pytest.mark.xfail(
    strict=True, raises=AssertionError,
    reason="mmdeploy 1.3.1's Mask R-CNN graph on torch 2.14 / onnxruntime 1.32: 27-46 of the 100 compared "
           "detections (each side's 50 best) unmatched, also on the traced image (docs/deploy.md, 'Mask R-CNN'). "
           'strict: once it matches, this test fails until the mark is removed')


@pytest.mark.parametrize('name', list(CASES))
def test_graph_has_postprocessing_and_standard_operators_only(name, exported):
    """One graph with the post-processing in it (NMS, RoIAlign, arg-max), no BatchNorm left, only standard
    ONNX operators (plain onnxruntime runs it, without mmdeploy's custom-op library)."""
    nodes = onnx.load(exported(name)[2]).graph.node
    ops = Counter(node.op_type for node in nodes)
    domains = {node.domain for node in nodes}
    assert CASES[name][3] <= set(ops), f'{name}: post-processing missing from the graph: {dict(ops)}'
    assert ops['BatchNormalization'] == 0
    assert domains <= {'', 'ai.onnx'}, f'custom operator domains {domains}: plain onnxruntime could not run it'


@pytest.mark.parametrize('name', [pytest.param(n, marks=MASK_RCNN_DIFFERS) if n == 'mask_rcnn' else n
                                  for n in CASES])
def test_onnxruntime_matches_fused_pytorch(name, exported):
    """mmdeploy's ONNX graph in onnxruntime predicts what the fused PyTorch model predicts: on the traced
    image and on new images (detection: of two sizes, one graph)."""
    _, fused, onnx_file, model_cfg, deploy_cfg = exported(name)
    processor, pytorch_model, ort_model = mmdeploy_compat.build_models(deploy_cfg, model_cfg, fused, [onnx_file])
    assert pytorch_model.backbone.deploy
    rng = np.random.default_rng(1)
    for img in [_traced_image(name)] + [_toy_image(rng, h, w) for h, w in CASES[name][2]]:
        diff = _predict_and_compare(processor, pytorch_model, ort_model, img)
        print(f'{name} {img.shape[0]}x{img.shape[1]}: {diff}')
        if name == 'semantic_fpn':
            assert diff['pixel_agreement'] >= SEG_AGREEMENT_MIN, diff
            continue
        assert diff['num_reference'] > 0, 'no detections: the comparison would be empty'
        assert diff['num_reference'] == diff['num_other'] and diff['unmatched'] == 0, diff
        assert diff['max_box_diff'] <= BOX_TOL and diff['max_score_diff'] <= SCORE_TOL, diff
        if name == 'mask_rcnn':
            assert diff['min_mask_iou'] >= MASK_IOU_MIN, diff


def _predict_and_compare(processor, reference_model, other_model, img: np.ndarray) -> dict:
    data, _ = processor.create_input(img)
    with torch.no_grad():   # each model on its own copy: test_step writes its predictions into the data samples
        ref = reference_model.test_step(copy.deepcopy(data))[0]
        got = other_model.test_step(copy.deepcopy(data))[0]
    return mmdeploy_compat.compare_predictions(ref, got, top_k=TOP_K)


def test_training_checkpoint_route_is_fused_by_mmdeploy(exported):
    """The shorter route: the training config and checkpoint given to mmdeploy directly. Its
    ``build_pytorch_model`` calls ``backbone.switch_to_deploy()``; the result predicts what the fused
    checkpoint's deploy form predicts, and what its ONNX graph predicts."""
    train, fused, onnx_file, model_cfg, deploy_cfg = exported('retinanet')
    train_cfg = mmdeploy_compat.load_model_config(ROOT / CASES['retinanet'][0])
    assert not train_cfg.model.backbone.get('deploy', False)
    processor, from_training, ort_model = mmdeploy_compat.build_models(deploy_cfg, train_cfg, train, [onnx_file])
    assert from_training.backbone.deploy, 'mmdeploy did not call switch_to_deploy()'
    _, from_fused, _ = mmdeploy_compat.build_models(deploy_cfg, model_cfg, fused, [onnx_file])
    img = _toy_image(np.random.default_rng(2), 160, 192)
    for other in (from_fused, ort_model):
        diff = _predict_and_compare(processor, from_training, other, img)
        assert diff['num_reference'] > 0 and diff['unmatched'] == 0, diff
        assert diff['max_box_diff'] <= BOX_TOL and diff['max_score_diff'] <= SCORE_TOL, diff


def test_patched_is_undone_and_provides_cast_long():
    """``patched()`` changes torch only inside the ``with`` block; inside, ``_cast_Long`` emits an int64 Cast
    and ``torch.onnx.export`` exports with the TorchScript exporter (no onnxscript needed)."""
    import io

    import torch.onnx.symbolic_opset9 as opset9
    export, had_cast_long = torch.onnx.export, hasattr(opset9, '_cast_Long')
    with mmdeploy_compat.patched():
        assert torch.onnx.export is not export
        graph = torch._C.Graph()
        cast = opset9._cast_Long(torch.onnx._internal.torchscript_exporter.jit_utils.GraphContext(
            graph=graph, block=graph.block(), opset=11, original_node=None, params_dict={}, env={},
            values_in_env=set(), new_nodes=[]), graph.addInput(), False)
        assert cast.node().kind() == 'onnx::Cast' and cast.node().i('to') == onnx.TensorProto.INT64
        buffer = io.BytesIO()
        torch.onnx.export(torch.nn.Conv2d(3, 4, 3), (torch.randn(1, 3, 8, 8),), buffer, opset_version=11)
        assert onnx.load_from_string(buffer.getvalue()).graph.node[0].op_type == 'Conv'
    assert torch.onnx.export is export and hasattr(opset9, '_cast_Long') == had_cast_long


def test_load_model_config_uses_the_test_dataloader_pipeline():
    """mmdeploy reads ``test_pipeline``; the toy configs test with their dataloader's pipeline (192x160), not
    the 1333x800 ``test_pipeline`` they inherit from mmdet."""
    from mmengine.config import Config
    path = ROOT / CASES['retinanet'][0]
    assert Config.fromfile(path).test_pipeline != Config.fromfile(path).test_dataloader.dataset.pipeline
    cfg = mmdeploy_compat.load_model_config(path, {'model.backbone.deploy': True})
    assert cfg.test_pipeline == cfg.test_dataloader.dataset.pipeline and cfg.model.backbone.deploy
    bare = Config(dict(model=dict(type='RetinaNet')))
    with pytest.raises(ValueError, match='neither test_pipeline nor test_dataloader'):
        mmdeploy_compat.load_model_config(bare)


def test_roi_align_symbolic_matches_mmcv_at_opset_16(tmp_path):
    """mmdeploy's RoIAlign symbolic (which needs the ``_cast_Long`` of the shim) exported at the instance-seg
    config's opset 16 gives mmcv's ``roi_align`` in onnxruntime, for another number of RoIs than traced."""
    import onnxruntime
    from mmcv.ops import RoIAlign
    from mmdeploy.apis.onnx import export

    def rois(n, gen):   # [n, 5]: batch index 0, then x1 y1 x2 y2 inside a 192x160 image, 1-60 pixels wide
        xy = torch.rand(n, 2, generator=gen) * 150
        return torch.cat([torch.zeros(n, 1), xy, xy + torch.rand(n, 2, generator=gen) * 59 + 1], 1)

    gen = torch.Generator().manual_seed(0)
    layer, feats = RoIAlign(7, 0.25, sampling_ratio=0), torch.randn(1, 4, 40, 48, generator=gen)
    ir = dict(opset_version=16)
    with mmdeploy_compat.patched():
        export(layer, (feats, rois(20, gen)), str(tmp_path / 'roi_align'), backend='onnxruntime',
               input_names=['feats', 'rois'], output_names=['out'], opset_version=16,
               dynamic_axes={'rois': {0: 'n'}, 'out': {0: 'n'}},
               context_info=dict(cfg=dict(ir_config=ir, backend_config=dict(type='onnxruntime'))))
    session = onnxruntime.InferenceSession(str(tmp_path / 'roi_align.onnx'), providers=['CPUExecutionProvider'])
    test_rois = rois(30, gen)
    got = session.run(None, {'feats': feats.numpy(), 'rois': test_rois.numpy()})[0]
    assert np.abs(got - layer(feats, test_rois).numpy()).max() <= 1e-5
