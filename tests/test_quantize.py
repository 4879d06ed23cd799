"""INT8 (onnxruntime static quantization) of the fused backbones: export, parity, refusals.

Small inputs (64x64), a few toy-COCO images; BatchNorm statistics calibrated on those images
(:func:`rep_backbones.apis.quantize.calibrate_bn`, seeded) so that activations are realistic.
"""
from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import rep_backbones
from rep_backbones.apis import quantize as q
from rep_backbones.apis.build import build_from_spec
from rep_backbones.apis.onnx_export import export_onnx

SHAPE = (64, 64)
SMALL = ('RepGhostNet:0.5x', 'RepGhostNetV2:S', 'MobileNetV4:S', 'RepNeXt:M0', 'RepNeXt:M0E', 'RepMobile:S')
# Lowest SQNR (dB) accepted for the stride-4 feature map, the one with the least accumulated error,
# where a broken quantization shows at once (wrong scales, an unfused branch, swapped outputs: SQNR
# near or below 0 dB). Measured with this file's setting (64x64, 4 calibration + 2 held-out toy
# images, seed 0): RepGhostNet 0.5x 12.2 dB, RepMobile S 16.3, RepNeXt M0 18.7, M0E 20.1,
# RepGhostNetV2 S 24.7, MobileNetV4 S 26.5. Deeper maps lose more (down to 0.4 dB at stride 32 on
# 2x2 maps: random weights amplify quantization noise, see docs/int8.md) and are only required to be
# finite and produced.
SQNR_FLOOR_DB = 10.0


@pytest.fixture(scope='module')
def toy_images(tmp_path_factory):
    """``(calibration files, held-out files)``: 4 + 2 generated toy COCO images at 64x64."""
    root = tmp_path_factory.mktemp('toy_quant')
    train, val = q.toy_image_folders(root, 4, 2, SHAPE)
    return q.list_images(train)[:4], q.list_images(val)[:2]


@pytest.fixture(scope='module')
def toy_inputs(toy_images):
    calib_files, eval_files = toy_images
    return (q.load_inputs(calib_files, SHAPE, q.imagenet_preprocess),
            q.load_inputs(eval_files, SHAPE, q.imagenet_preprocess))


def calibrated(spec: str, calib) -> torch.nn.Module:
    torch.manual_seed(0)
    return q.calibrate_bn(build_from_spec(spec), [torch.from_numpy(np.concatenate(calib))], seed=0)


@pytest.mark.parametrize('spec', SMALL)
def test_quantized_export_and_parity(spec, toy_inputs, tmp_path):
    torch.set_num_threads(1)
    calib, evals = toy_inputs
    model = rep_backbones.fuse(calibrated(spec, calib))
    result = q.measure_fused(model, calib, evals, tmp_path, 'bb', threads=1)
    int8 = onnx.load(str(tmp_path / 'bb.int8.onnx'))
    ops = {node.op_type for node in int8.graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= ops
    outputs = result['outputs']
    assert len(outputs) == len(model.out_indices) == 4
    for out, ref in zip(outputs, model(torch.from_numpy(evals[0]))):
        assert out['shape'] == tuple(ref.shape)
        assert 0 < out['max_abs'] < out['max_ref'] and math.isfinite(out['sqnr_db'])
    assert outputs[0]['sqnr_db'] >= SQNR_FLOOR_DB, f'{spec}: stride-4 SQNR {outputs[0]["sqnr_db"]:.1f} dB'


def test_sqnr_db():
    ref = np.ones((2, 3), np.float32)
    assert q.sqnr_db(ref, ref) == math.inf
    assert q.sqnr_db(ref, ref * 1.1) == pytest.approx(20.0, abs=1e-3)     # |noise| = |signal| / 10
    assert q.sqnr_db([ref, ref], [ref, ref * 1.01]) == pytest.approx(43.0103, abs=1e-3)


def test_range_report_shows_a_wide_channel(toy_inputs, tmp_path):
    """One stem channel scaled up x100 shows as the channel spread of the stem's activation."""
    torch.set_num_threads(1)
    calib, evals = toy_inputs
    model = rep_backbones.fuse(calibrated('RepGhostNet:0.5x', calib))
    spreads = []
    for factor in (1.0, 100.0):
        with torch.no_grad():
            model.conv_stem.weight[0] *= factor
            model.conv_stem.bias[0] *= factor
        fp32, int8 = tmp_path / f'{factor}.fp32.onnx', tmp_path / f'{factor}.int8.onnx'
        export_onnx(model, torch.from_numpy(evals[0]), fp32)
        q.quantize_onnx(fp32, int8, calib, progress=False)
        rows = q.range_report(fp32, int8, evals[:1])
        assert {r.kind for r in rows} == {'weight', 'activation'}
        assert [r.sqnr_db for r in rows] == sorted(r.sqnr_db for r in rows)
        stem = next(r for r in rows if r.tensor == '/act1/Relu_output_0')
        assert stem.low == 0 and stem.high > 0 and stem.sqnr_db > stem.accumulated_db - 1e-6
        spreads.append(stem.spread)
    assert spreads[0] < 10 and spreads[1] > 10 * spreads[0]


def test_quantize_refuses_a_graph_with_batchnorm(toy_inputs, tmp_path):
    calib, evals = toy_inputs
    model = calibrated('RepNeXt:M0', calib)               # training form: BN after every token mixer
    fp32, int8 = tmp_path / 'train.onnx', tmp_path / 'train.int8.onnx'
    export_onnx(model, torch.from_numpy(evals[0]), fp32)
    with pytest.raises(q.UnfusedModelError, match='BatchNormalization node'):
        q.quantize_onnx(fp32, int8, calib, progress=False)
    assert not int8.exists()


def test_failed_quantization_leaves_no_file(toy_inputs, tmp_path, monkeypatch):
    import onnxruntime.quantization as ortq
    calib, evals = toy_inputs
    fp32, int8 = tmp_path / 'm.onnx', tmp_path / 'm.int8.onnx'
    export_onnx(rep_backbones.fuse(build_from_spec('RepGhostNet:0.5x')), torch.from_numpy(evals[0]), fp32)

    def half_written(model_input, model_output, *args, **kwargs):
        with open(model_output, 'wb') as f:
            f.write(b'partial')
        raise RuntimeError('interrupted')
    monkeypatch.setattr(ortq, 'quantize_static', half_written)
    with pytest.raises(RuntimeError, match='interrupted'):
        q.quantize_onnx(fp32, int8, calib, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.onnx']


@pytest.mark.parametrize('arch', ['M0', 'M0E'])
def test_repnext_norm_forward_is_exact(arch, toy_inputs):
    calib, evals = toy_inputs
    model = calibrated(f'RepNeXt:{arch}', calib)
    moved = rep_backbones.fuse(q.repnext_norm_forward(copy.deepcopy(model)).eval())
    x = torch.from_numpy(np.concatenate(evals))
    with torch.no_grad():
        for a, b in zip(model(x), moved(x)):
            assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_fused_layouts(toy_inputs):
    calib, _ = toy_inputs
    assert set(q.fused_layouts(calibrated('RepNeXt:M0', calib))) == {
        'default', 'single-branch', 'norm-forward'}
    assert set(q.fused_layouts(calibrated('RepNeXt:M0E', calib))) == {'default', 'norm-forward'}
    assert set(q.fused_layouts(calibrated('RepMobile:S', calib))) == {'default', 'identity-split'}
    assert set(q.fused_layouts(calibrated('RepGhostNet:0.5x', calib))) == {'default', 'identity-split'}
    assert set(q.fused_layouts(calibrated('MobileNetV4:S', calib))) == {'default'}


@pytest.mark.parametrize('spec', ['RepGhostNet:0.5x', 'RepMobile:S'])
def test_identity_split_is_exact(spec, toy_inputs):
    calib, evals = toy_inputs
    model = calibrated(spec, calib)
    split = q.identity_split(model)
    assert sum(isinstance(m, q.SplitShortcut) for m in split.modules()) > 0
    x = torch.from_numpy(np.concatenate(evals))
    with torch.no_grad():
        for a, b in zip(model(x), split(x)):
            assert (a - b).abs().max() <= 1e-4 * a.abs().max()


# -- the command-line tool ------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


def run_tool(*argv, cwd=ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'quantize_onnx.py'), *map(str, argv)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_tool_backbone_spec(toy_images, tmp_path):
    calib_dir = toy_images[0][0].parent
    out = tmp_path / 'bb.int8.onnx'
    common = ['RepGhostNet:0.5x', 'none', '--out', out, '--shape', 64, 64, '--calib-dir', calib_dir,
              '--calib-n', 2, '--threads', 1, '--no-progress']
    proc = run_tool(*common, '--eval-n', 2, '--range-report', 3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.is_file() and (tmp_path / 'bb.fp32.onnx').is_file()
    assert len(re.findall(r'^  output\d \(1, \d+, \d+, \d+\): SQNR -?[\d.]+ dB, max \|diff\|', proc.stdout,
                          re.M)) == 4, proc.stdout
    report = proc.stdout.split('range report')[1].strip().splitlines()[1:]
    assert len(report) == 3 and all(' dB ' in line for line in report)
    proc = run_tool(*common, '--eval-n', 1, '--min-sqnr', 1000)     # unreachable: status 1
    assert proc.returncode == 1 and '< --min-sqnr 1000' in proc.stderr


def test_tool_refuses_unfused_model(toy_images, tmp_path):
    out = tmp_path / 'x.int8.onnx'
    proc = run_tool('RepNeXt:M0', 'none', '--out', out, '--shape', 64, 64, '--no-fuse',
                    '--calib-dir', toy_images[0][0].parent, '--calib-n', 2)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'RepNeXt is not fused' in proc.stderr and 'BatchNorm' in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_tool_detector_tensor_mode_and_map(tmp_path):
    """Whole RetinaNet (toy config, random init) in tensor mode: 5 score + 5 box outputs, and bbox mAP
    of the fp32 and the INT8 graph from mmdet's evaluator on a 2-image toy test set (``cwd`` holds
    the config's ``data/toy_coco``)."""
    pytest.importorskip('mmdet')
    pytest.importorskip('mmcv.ops')                     # NMS of the post-processing
    from detection.toy_coco import make_toy_coco
    paths = make_toy_coco(tmp_path / 'data' / 'toy_coco', num_train=2, num_val=2)
    out = tmp_path / 'det.int8.onnx'
    proc = run_tool(ROOT / 'configs' / 'toy' / 'toy_retinanet_repghost_1_0x.py', 'none', '--out', out,
                    '--calib-dir', paths['train_img_dir'], '--calib-n', 2, '--eval-n', 1, '--eval-map',
                    '--threads', 1, '--no-progress', cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'input size (160, 192) from the pipeline' in proc.stdout
    assert len(re.findall(r'^  output\d+ \(1, \d+, \d+, \d+\): SQNR', proc.stdout, re.M)) == 10
    for name in ('fp32', 'INT8'):
        found = re.search(rf'^{name} onnxruntime: coco/bbox_mAP ([\d.]+), coco/bbox_mAP_50 ([\d.]+)$',
                          proc.stdout, re.M)
        assert found and all(0 <= float(v) <= 1 for v in found.groups()), proc.stdout[-2000:]
