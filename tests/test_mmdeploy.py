"""Deployment through mmdeploy (docs/deploy.md), end to end, for RetinaNet, Mask R-CNN and Semantic FPN with a
RepGhostNet 1.0x backbone (the toy configs):

training-form checkpoint (seeded random weights and BN statistics) -> ``tools/fuse_checkpoint.py`` ->
deploy form (``model.backbone.deploy=True``) -> mmdeploy ``torch2onnx`` through
``rep_backbones.deploy.mmdeploy_compat`` with ``configs/mmdeploy/*`` -> one ONNX graph with post-processing ->
mmdeploy's onnxruntime ``End2EndModel``, compared with the fused PyTorch model on seeded toy images: the
traced one and new ones (detection: two sizes, one graph with dynamic shapes; segmentation: the traced size,
the only one at which the graph is exact, docs/deploy.md). Detections are matched (boxes, scores, labels,
masks); label maps compared pixel by pixel. Mask R-CNN: the graph is compared with mmdeploy's rewritten model
run in PyTorch (exact), and with mmdet post-processing as mmdeploy 1.3.1 does (``mmdet_postprocessing_as_mmdeploy``;
plain mmdet differs by mmdeploy's design, docs/deploy.md 'Mask R-CNN').
"""
from __future__ import annotations

import contextlib
import copy
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from rep_backbones.deploy import mmdeploy_compat, mmdeploy_verify
from rep_backbones.io.build import build_model_from_config

from .helpers import load_tool

pytestmark = [pytest.mark.slow, pytest.mark.deploy]

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
# onnxruntime vs PyTorch, float32: the same detections, and per model the largest box (pixels) and score
# differences and the lowest mask IoU allowed. Measured (largest over the test images; docs/deploy.md and the
# README quote the first machine's): RetinaNet 1.4e-4 px and 3.0e-7 here on an AVX2-only CPU, 2e-4 px and
# 3e-7 on the first; Mask R-CNN (aligned post-processing) 9.2e-5 px, 4.5e-8, mask IoU 0.99963 here, 6.1e-5 px,
# 4.5e-8, 0.9996 there. That is float32 rounding of one computation in two runtimes: a few units in the last
# place of a 384-pixel coordinate (2.3e-5 px each) or of a score. The bounds are 5x the largest measured
# (other CPUs' kernels sum in other orders); what a real difference does is far larger (mmdeploy's own
# post-processing against plain mmdet: boxes 29.8 px apart, test_mask_rcnn_differs_from_plain_mmdet).
TOLERANCES = {'retinanet': dict(box=1e-3, score=1.5e-6), 'mask_rcnn': dict(box=5e-4, score=2.5e-7, mask_iou=0.998)}
# Each side's 50 best detections are matched among all of the other side's (100 at most, mmdet's max_per_img):
# random weights give many near-equal scores, and which of them make the 100th place is a coin toss.
TOP_K = 50
# label maps: all but arg-max near-ties of random logits (1 pixel in 81,920 measured)
SEG_AGREEMENT_MIN = 0.9999
# Mask R-CNN graph vs mmdeploy's rewritten model run in PyTorch (raw outputs, resized image): boxes (pixels),
# scores, 28x28 mask probabilities. Float32 noise of the same computation, measured: 3.4e-5 px, 4.5e-8 and
# 1.2e-7 here (3.5e-5 px, 4.5e-8, 1.2e-7 on the first machine); the bounds are 5x those, as above.
RAW_BOX_TOL, RAW_SCORE_TOL, RAW_MASK_TOL = 2e-4, 2.5e-7, 6e-7
OPTIONS = {}


def _fuse_checkpoint_tool():
    return load_tool('tools/fuse_checkpoint.py').fuse_checkpoint


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
            model_cfg = mmdeploy_verify.load_model_config(ROOT / config, {'model.backbone.deploy': True})
            deploy_cfg = str(DEPLOY / deploy_cfg)
            onnx_file = mmdeploy_compat.torch2onnx(_traced_image(name), str(work), 'end2end.onnx', deploy_cfg,
                                                   model_cfg, fused)
            cache[name] = (train, fused, onnx_file, model_cfg, deploy_cfg)
        return cache[name]
    return get


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


@pytest.mark.parametrize('name', list(CASES))
def test_onnxruntime_matches_fused_pytorch(name, exported):
    """mmdeploy's ONNX graph in onnxruntime predicts what the fused PyTorch model predicts: on the traced
    image and on new images (detection: of two sizes, one graph). Mask R-CNN: the PyTorch model post-processes
    as mmdeploy's graph does (``mmdet_postprocessing_as_mmdeploy``); plain mmdet differs by mmdeploy's design,
    pinned by ``test_mask_rcnn_differs_from_plain_mmdet`` and
    ``test_mmdeploy_rpn_pads_its_proposals_with_a_zero_box``."""
    _, fused, onnx_file, model_cfg, deploy_cfg = exported(name)
    processor, pytorch_model, ort_model = mmdeploy_verify.build_models(deploy_cfg, model_cfg, fused, [onnx_file])
    assert pytorch_model.backbone.deploy
    context = mmdeploy_verify.mmdet_postprocessing_as_mmdeploy if name == 'mask_rcnn' else contextlib.nullcontext
    for img in _images(name):
        diff = _predict_and_compare(processor, pytorch_model, ort_model, img, context)
        print(f'{name} {img.shape[0]}x{img.shape[1]}: {diff}')
        if name == 'semantic_fpn':
            assert diff['pixel_agreement'] >= SEG_AGREEMENT_MIN, diff
            continue
        assert diff['num_reference'] > 0, 'no detections: the comparison would be empty'
        assert diff['num_reference'] == diff['num_other'] and diff['unmatched'] == 0, diff
        tol = TOLERANCES[name]
        assert diff['max_box_diff'] <= tol['box'] and diff['max_score_diff'] <= tol['score'], diff
        if name == 'mask_rcnn':
            assert diff['min_mask_iou'] >= tol['mask_iou'], diff
            assert diff['zero_area'] <= 1, diff      # at most the padding RoI's detection (rule 3)


def _images(name: str):
    """The traced image, then new ones of the case's sizes."""
    rng = np.random.default_rng(1)
    return [_traced_image(name)] + [_toy_image(rng, h, w) for h, w in CASES[name][2]]


def _predict_and_compare(processor, reference_model, other_model, img: np.ndarray,
                         reference_context=contextlib.nullcontext) -> dict:
    data, _ = processor.create_input(img)
    with torch.no_grad():   # each model on its own copy: test_step writes its predictions into the data samples
        with reference_context():
            ref = reference_model.test_step(copy.deepcopy(data))[0]
        got = other_model.test_step(copy.deepcopy(data))[0]
    return mmdeploy_verify.compare_predictions(ref, got, top_k=TOP_K)


def test_mask_rcnn_graph_equals_mmdeploys_rewritten_model(exported):
    """The exported graph is exact: onnxruntime's raw outputs (dets, labels, 28x28 mask probabilities, in the
    resized image) are those of mmdeploy's rewritten model run eagerly in PyTorch (``rewritten_predict``), on
    the traced image and on a new one of another size. All detections (up to 100) are paired, as sets: a
    detection's partner has the same label and a box within RAW_BOX_TOL (the order of equal scores may differ:
    onnxruntime's NMS and TopK against mmcv's nms and a sort)."""
    _, fused, onnx_file, model_cfg, deploy_cfg = exported('mask_rcnn')
    processor, pytorch_model, ort_model = mmdeploy_verify.build_models(deploy_cfg, model_cfg, fused, [onnx_file])
    for img in _images('mask_rcnn')[::2]:   # the traced 320x384 one and the new 96x192 one
        data, _ = processor.create_input(img)
        batch = pytorch_model.data_preprocessor(copy.deepcopy(data), False)
        eager = [t[0] for t in mmdeploy_verify.rewritten_predict(pytorch_model, deploy_cfg, batch['inputs'],
                                                                   batch['data_samples'])]
        graph = [torch.as_tensor(np.asarray(t))[0] for t in ort_model.predict(batch['inputs'])]
        diff = _raw_diff(eager, graph)
        print(f'mask_rcnn raw {img.shape[0]}x{img.shape[1]}: {diff}')
        assert diff['num_eager'] > 0 and diff['num_eager'] == diff['num_graph'] and diff['unmatched'] == 0, diff
        assert diff['max_box_diff'] <= RAW_BOX_TOL and diff['max_score_diff'] <= RAW_SCORE_TOL, diff
        assert diff['max_mask_diff'] <= RAW_MASK_TOL, diff


def _raw_diff(eager, graph) -> dict:
    """Raw ``(dets, labels, masks)`` of one image, each side's rows of positive score: matched greedily, best
    score first, to the nearest unused same-label row of the other side (largest box coordinate difference),
    accepted within RAW_BOX_TOL. ``max_mask_diff``: largest absolute difference of mask probabilities."""
    (de, le, me), (dg, lg, mg) = eager, graph
    ke, kg = de[:, 4] > 0, dg[:, 4] > 0
    de, le, me, dg, lg, mg = de[ke], le[ke], me[ke], dg[kg], lg[kg], mg[kg]
    out = dict(num_eager=len(de), num_graph=len(dg), unmatched=0, max_box_diff=0.0, max_score_diff=0.0,
               max_mask_diff=0.0)
    used = set()
    for i in torch.argsort(de[:, 4], descending=True, stable=True).tolist():
        cand = [j for j in torch.nonzero(lg == le[i]).flatten().tolist() if j not in used]
        dist = (dg[cand, :4] - de[i, :4]).abs().amax(dim=1) if cand else None
        if not cand or float(dist.min()) > RAW_BOX_TOL:
            out['unmatched'] += 1
            continue
        j = cand[int(dist.argmin())]
        used.add(j)
        out['max_box_diff'] = max(out['max_box_diff'], float(dist.min()))
        out['max_score_diff'] = max(out['max_score_diff'], float((dg[j, 4] - de[i, 4]).abs()))
        out['max_mask_diff'] = max(out['max_mask_diff'], float((mg[j] - me[i]).abs().max()))
    out['unmatched'] += len(dg) - len(used)
    return out


def test_mask_rcnn_differs_from_plain_mmdet(exported):
    """Pins the known difference (docs/deploy.md, 'Mask R-CNN'): against plain mmdet (a box regressed per class,
    one RPN NMS per level) the graph's detections differ on the traced image, while mmdet with
    ``mmdet_postprocessing_as_mmdeploy`` (mmdeploy 1.3.1's two rules) is matched by
    ``test_onnxruntime_matches_fused_pytorch``. If this fails, mmdeploy post-processes as mmdet now: update the
    docs and this test."""
    _, fused, onnx_file, model_cfg, deploy_cfg = exported('mask_rcnn')
    processor, pytorch_model, ort_model = mmdeploy_verify.build_models(deploy_cfg, model_cfg, fused, [onnx_file])
    plain = _predict_and_compare(processor, pytorch_model, ort_model, _traced_image('mask_rcnn'))
    print(f'mask_rcnn vs plain mmdet: {plain}')
    assert plain['max_box_diff'] > 1, plain   # measured 29.8 px (pairs accepted at IoU >= 0.5); aligned: 6.9e-5


def test_mmdeploy_rpn_pads_its_proposals_with_a_zero_box(exported):
    """The third rule (docs/deploy.md, 'Mask R-CNN'): with fewer than ``max_per_img`` proposals after NMS,
    mmdeploy's RPN (rewritten model run eagerly, as it is traced) hands the RoI head one more than mmdet: an
    all-zero row. The RoI head scores it like any RoI; on the traced image it becomes a detection with a
    zero-size box at the origin, and onnxruntime pastes that detection's mask over the whole image (mmdet: one
    pixel). ``mmdet_postprocessing_as_mmdeploy`` appends the same row, so mmdet then has that detection too."""
    from mmdet.models.roi_heads import StandardRoIHead
    _, fused, onnx_file, model_cfg, deploy_cfg = exported('mask_rcnn')
    processor, pytorch_model, ort_model = mmdeploy_verify.build_models(deploy_cfg, model_cfg, fused, [onnx_file])
    data, _ = processor.create_input(_traced_image('mask_rcnn'))
    batch = pytorch_model.data_preprocessor(copy.deepcopy(data), False)
    seen, predict = [], StandardRoIHead.predict

    def spy(self, x, rpn_results_list, *args, **kwargs):
        seen.append(rpn_results_list)
        return predict(self, x, rpn_results_list, *args, **kwargs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StandardRoIHead, 'predict', spy)
        mmdeploy_verify.rewritten_predict(pytorch_model, deploy_cfg, batch['inputs'], batch['data_samples'])
        pytorch_model.test_step(copy.deepcopy(data))
        with mmdeploy_verify.mmdet_postprocessing_as_mmdeploy():
            pytorch_model.test_step(copy.deepcopy(data))
    (graph_proposals, _), plain, aligned = seen[0], seen[1][0], seen[2][0]
    max_per_img = pytorch_model.test_cfg.rpn.max_per_img
    assert len(aligned) < max_per_img, len(aligned)
    assert graph_proposals.shape[1] == len(aligned), (graph_proposals.shape, len(aligned))
    assert not graph_proposals[0, -1].any() and not aligned.bboxes[-1].any() and not aligned.scores[-1]
    assert (plain.bboxes[:, 2:] > plain.bboxes[:, :2]).all(), 'mmdet has no zero-size proposal'
    got = ort_model.test_step(copy.deepcopy(data))[0].pred_instances
    zero = [i for i, box in enumerate(got.bboxes) if not box.any()]
    assert len(zero) == 1 and bool(got.masks[zero[0]].all()), 'the padding detection: whole-image mask'


def test_deploy_tool_as_mmdeploy_matches_every_detection(exported, tmp_path, capsys):
    """``tools/deploy_mmdeploy.py --as-mmdeploy`` (README, docs/deploy.md): exports the fused Mask R-CNN from
    its config file and an image file, and reports every detection matched (the padding detection counted in
    ``zero_area``)."""
    import mmcv
    _, fused, _, _, deploy_cfg = exported('mask_rcnn')
    image = tmp_path / 'traced.png'
    mmcv.imwrite(_traced_image('mask_rcnn'), str(image))
    tool = load_tool('tools/deploy_mmdeploy.py')
    tool.main([deploy_cfg, str(ROOT / CASES['mask_rcnn'][0]), fused, str(image), '--work-dir', str(tmp_path / 'work'),
               '--cfg-options', 'model.backbone.deploy=True', '--as-mmdeploy'])
    out = capsys.readouterr().out
    assert (tmp_path / 'work' / 'end2end.onnx').is_file()
    report = dict(item.split('=') for item in out.strip().splitlines()[-1].split(': ', 1)[1].split(', '))
    assert float(report['num_reference']) > 0 and float(report['unmatched']) == 0, out
    tol = TOLERANCES['mask_rcnn']
    assert float(report['max_box_diff']) <= tol['box'] and float(report['min_mask_iou']) >= tol['mask_iou'], out
    assert float(report['zero_area']) == 1, out


def test_mmdeploy_box_head_gives_every_class_the_top_class_box():
    """The R-CNN half of the difference, on one RoI: class 0 scores highest, class 1 is above ``score_thr`` too,
    and each class has its own regression deltas. mmdet gives class 1 its own box; mmdeploy 1.3.1's rewrite of
    ``BBoxHead.predict_by_feat`` (run eagerly, as it is traced) gives it class 0's; mmdet inside
    ``mmdet_postprocessing_as_mmdeploy`` does as mmdeploy."""
    from mmdeploy.core import RewriterContext
    from mmdeploy.utils import IR, load_config
    from mmdet.models.roi_heads.bbox_heads.bbox_head import BBoxHead
    from mmengine.config import ConfigDict

    head = BBoxHead(with_avg_pool=False, in_channels=4, roi_feat_size=1, num_classes=2).eval()
    rois, logits = torch.tensor([[0., 10., 10., 50., 50.]]), torch.tensor([[2., 1., 0.]])   # (bg last)
    deltas = torch.tensor([[0., 0., 0., 0., 1., 1., 1., 1.]])                               # class 0, class 1
    metas, cfg = [dict(img_shape=(100, 100))], ConfigDict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                                                          max_per_img=100)

    def mmdet_boxes():
        res = head.predict_by_feat((rois,), (logits,), (deltas,), metas, rcnn_test_cfg=cfg)[0]
        return {int(label): box for label, box in zip(res.labels, res.bboxes)}
    plain = mmdet_boxes()
    with mmdeploy_verify.mmdet_postprocessing_as_mmdeploy():
        aligned = mmdet_boxes()
    deploy_cfg = load_config(str(DEPLOY / CASES['mask_rcnn'][1]))[0]
    with RewriterContext(cfg=deploy_cfg, backend='onnxruntime', ir=IR.ONNX, opset=16), torch.no_grad():
        dets, labels = head.predict_by_feat(rois[None], logits[None], deltas[None], metas, rcnn_test_cfg=cfg)
    graph = {int(label): det[:4] for label, det in zip(labels[0], dets[0]) if det[4] > 0}
    assert set(plain) == set(aligned) == set(graph) == {0, 1}
    assert (plain[1] - plain[0]).abs().max() > 1, 'mmdet: class 1 has its own box'
    for label in (0, 1):
        torch.testing.assert_close(graph[label], plain[0])      # mmdeploy: the top class's box for every class
        torch.testing.assert_close(aligned[label], graph[label])


def test_training_checkpoint_route_is_fused_by_mmdeploy(exported):
    """The shorter route: the training config and checkpoint given to mmdeploy directly. Its
    ``build_pytorch_model`` calls ``backbone.switch_to_deploy()``; the result predicts what the fused
    checkpoint's deploy form predicts, and what its ONNX graph predicts."""
    train, fused, onnx_file, model_cfg, deploy_cfg = exported('retinanet')
    train_cfg = mmdeploy_verify.load_model_config(ROOT / CASES['retinanet'][0])
    assert not train_cfg.model.backbone.get('deploy', False)
    processor, from_training, ort_model = mmdeploy_verify.build_models(deploy_cfg, train_cfg, train, [onnx_file])
    assert from_training.backbone.deploy, 'mmdeploy did not call switch_to_deploy()'
    _, from_fused, _ = mmdeploy_verify.build_models(deploy_cfg, model_cfg, fused, [onnx_file])
    img = _toy_image(np.random.default_rng(2), 160, 192)
    for other in (from_fused, ort_model):
        diff = _predict_and_compare(processor, from_training, other, img)
        assert diff['num_reference'] > 0 and diff['unmatched'] == 0, diff
        tol = TOLERANCES['retinanet']
        assert diff['max_box_diff'] <= tol['box'] and diff['max_score_diff'] <= tol['score'], diff


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


def test_mmdet_postprocessing_as_mmdeploy_is_undone():
    """The two mmdet methods are replaced only inside the ``with`` block, and restored when it raises."""
    from mmdet.models.dense_heads.rpn_head import RPNHead
    from mmdet.models.roi_heads.bbox_heads.bbox_head import BBoxHead

    def methods():
        return RPNHead.__dict__['_bbox_post_process'], BBoxHead.__dict__['_predict_by_feat_single']
    before = methods()
    with mmdeploy_verify.mmdet_postprocessing_as_mmdeploy():
        assert all(a is not b for a, b in zip(methods(), before))
    assert methods() == before
    with pytest.raises(RuntimeError, match='inside'):
        with mmdeploy_verify.mmdet_postprocessing_as_mmdeploy():
            raise RuntimeError('inside')
    assert methods() == before


def test_load_model_config_uses_the_test_dataloader_pipeline():
    """mmdeploy reads ``test_pipeline``; the toy configs test with their dataloader's pipeline (192x160), not
    the 1333x800 ``test_pipeline`` they inherit from mmdet."""
    from mmengine.config import Config
    path = ROOT / CASES['retinanet'][0]
    assert Config.fromfile(path).test_pipeline != Config.fromfile(path).test_dataloader.dataset.pipeline
    cfg = mmdeploy_verify.load_model_config(path, {'model.backbone.deploy': True})
    assert cfg.test_pipeline == cfg.test_dataloader.dataset.pipeline and cfg.model.backbone.deploy
    bare = Config(dict(model=dict(type='RetinaNet')))
    with pytest.raises(ValueError, match='neither test_pipeline nor test_dataloader'):
        mmdeploy_verify.load_model_config(bare)


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
