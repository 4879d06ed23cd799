"""tools/deploy.py and rep_backbones.deploy at toy scale: the toy RetinaNet + RepGhostNet 1.0x (seeded random
weights), 4 toy training images for calibration, 3 test images at 160x192.

Each backend once in fp32 and INT8; NNCF's accuracy control with a target it meets (on the toy detector) and, on
a three-convolution network, with one it meets and one it cannot; ``auto``: every candidate on the card and the
fastest within the bound kept; every bad input (unfused model, a graph the backend cannot read, missing / empty
calibration folder, unmet target) fails with its own error and leaves no artifact; the report card's fields.
"""
import json
import os

import numpy as np
import pytest
import torch

from tests.helpers import ROOT, require, run_tool

pytestmark = [pytest.mark.slow, pytest.mark.deploy]

CONFIG = str(ROOT / 'configs' / 'toy' / 'toy_retinanet_repghost_1_0x.py')
FORMS = ['training form (mmdet)', 'fused PyTorch', 'deployed fp32']
# fp32 export vs fused PyTorch: float rounding only. INT8 of a random detector: 20-46 dB per output here
# (onnxruntime), a quantization that did nothing would be fp32's ~100+ dB, a broken one near 0.
FP32_SQNR_MIN_DB, INT8_SQNR_RANGE_DB = 60.0, (12.0, 55.0)


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    """A folder holding ``data/toy_coco`` (the config's relative data root) and ``random.pth``."""
    require('mmdet', 'mmcv.ops', 'onnxruntime', 'openvino', 'nncf')
    from rep_backbones.io.build import build_model_from_config
    from rep_backbones.toy_data import make_toy_coco
    root = tmp_path_factory.mktemp('deploy')
    make_toy_coco(root / 'data' / 'toy_coco', num_train=4, num_val=3)
    torch.manual_seed(0)
    torch.save({'meta': {}, 'state_dict': build_model_from_config(CONFIG).state_dict()}, root / 'random.pth')
    return root


def _deploy(toy, monkeypatch, work_dir, checkpoint='random.pth', config=CONFIG, **kwargs):
    from rep_backbones.deploy.pipeline import DeployOptions, deploy
    monkeypatch.chdir(toy)
    options = DeployOptions(**{**dict(calib_n=2, rounds=1, time_n=2, progress=False), **kwargs})
    return deploy(config, str(toy / checkpoint), str(work_dir), options)


def _leftovers(work_dir):
    return [p for p in os.listdir(work_dir) if p.startswith('.')] if os.path.isdir(work_dir) else []


def _check_card(card, out, precision, backend):
    forms = FORMS + (['deployed INT8'] if precision == 'int8' else [])
    assert list(card['forms']) == forms
    assert card['backend'] == backend and card['precision'] == precision
    assert {'coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'} <= set(card['metric_keys'])
    for form in card['forms'].values():
        assert 0 <= form['primary'] <= 1 and form['primary'] == form['metrics']['coco/bbox_mAP']
        assert 0 < form['latency']['median_ms'] <= form['latency']['p90_ms']
        assert form['latency']['n'] == 2            # 1 round x 2 images
    # fusion is exact: the training form and the fused model score alike on the same images
    assert card['forms']['fused PyTorch']['metrics'] == card['forms']['training form (mmdet)']['metrics']
    assert card['stages'].startswith('backbone, neck and head in the backend')
    assert json.loads((out / 'report.json').read_text())['forms'].keys() == card['forms'].keys()
    md = (out / 'report.md').read_text()
    for text in forms + ['coco/bbox_mAP', 'median ms', 'p90 ms', 'SQNR (dB)', card['artifact']]:
        assert text in md, text
    assert (out / card['artifact']).is_file()
    sqnr = [p['sqnr_db'] for p in card['parity']]
    assert len(sqnr) == 10                          # 5 levels x (scores, boxes)
    if precision == 'fp32':
        assert min(sqnr) >= FP32_SQNR_MIN_DB, sqnr
    else:
        assert INT8_SQNR_RANGE_DB[0] <= min(sqnr) and max(sqnr) <= INT8_SQNR_RANGE_DB[1], sqnr


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
@pytest.mark.parametrize('precision', ['fp32', 'int8'])
def test_deploy_backend_precision(toy, monkeypatch, tmp_path, backend, precision):
    card = _deploy(toy, monkeypatch, tmp_path, backend=backend, precision=precision)
    out = tmp_path / f'toy_retinanet_repghost_1_0x_{backend}_{precision}'
    _check_card(card, out, precision, backend)
    expected = {('onnxruntime', 'fp32'): 'model.onnx', ('openvino', 'fp32'): 'model.onnx',
                ('onnxruntime', 'int8'): 'model.int8.onnx', ('openvino', 'int8'): 'model.xml'}[backend, precision]
    assert card['artifact'] == expected and sorted(os.listdir(out)) == sorted(
        [expected, 'report.md', 'report.json'] + (['model.bin'] if expected == 'model.xml' else []))
    assert not _leftovers(tmp_path)


@pytest.mark.slow
def test_accuracy_control_meets_target(toy, monkeypatch, tmp_path):
    """A bound NNCF can hold (0.05 bbox mAP on a detector at ~0.03): the INT8 model is written, the card
    gives the measured drop within the bound."""
    card = _deploy(toy, monkeypatch, tmp_path, backend='openvino', precision='int8', max_drop=0.05)
    ac = card['accuracy_control']
    assert ac['max_drop'] == 0.05 and ac['drop'] <= 0.05
    assert ac['fp32_metric'] == pytest.approx(card['forms']['deployed fp32']['primary'], abs=1e-6)
    assert 'accuracy_control' in card['quantizer']


def test_accuracy_control_loop_on_a_tiny_network(tmp_path):
    """NNCF's accuracy-control loop itself, on three convolutions (seconds, not minutes): the metric is 1 minus
    the mean abs error vs the fp32 outputs computed beforehand (1, not 0, for fp32: NNCF divides by the fp32
    metric), so any INT8 error is a drop. A bound it meets returns a quantized model with the drop measured again;
    one it cannot (the metric 1 *above* fp32's, which is its maximum) raises AccuracyTargetError carrying the best
    drop the loop reached."""
    require('openvino', 'nncf')
    from rep_backbones.deploy.export import export_onnx
    from rep_backbones.deploy.quantize import AccuracyTargetError, ZeroMetricError, nncf_quantize_with_accuracy_control
    from rep_backbones.deploy.runtimes import Session
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).eval()
    xs = [torch.randn(1, 3, 16, 16).numpy() for _ in range(4)]
    export_onnx(net, torch.from_numpy(xs[0]), tmp_path / 'net.onnx')
    fp32 = Session('openvino', tmp_path / 'net.onnx', 1)
    items = [(x, fp32.run(x)[0]) for x in xs]                  # (input, fp32 output)

    def validate(compiled, subset) -> float:
        session = Session('openvino', compiled)
        return 1 - float(np.mean([np.abs(session.run(x)[0] - ref).mean() for x, ref in subset]))

    def quantize(max_drop):
        return nncf_quantize_with_accuracy_control(tmp_path / 'net.onnx', xs, items, validate, lambda item: item[0],
                                                   max_drop, max_iterations=2)
    model, info = quantize(0.5)
    assert info['fp32_metric'] == pytest.approx(1, abs=1e-6) and 0 < info['drop'] <= 0.5
    assert any(op.get_type_name() == 'FakeQuantize' for op in model.get_ops())
    with pytest.raises(AccuracyTargetError, match='cannot meet --max-drop -1') as err:
        quantize(-1.0)
    assert 0 <= err.value.best_drop < 0.5
    # a model scoring 0 (untrained): named before NNCF would divide by it
    with pytest.raises(ZeroMetricError, match='fp32 metric is 0'):
        nncf_quantize_with_accuracy_control(tmp_path / 'net.onnx', xs, items, lambda compiled, subset: 0.0,
                                            lambda item: item[0], 0.01, max_iterations=2)


def test_unmet_accuracy_target_leaves_nothing(toy, monkeypatch, tmp_path, capsys):
    """The tool's side of an unmet target (the NNCF loop itself: the test above): the pipeline's
    AccuracyTargetError makes the command line exit 2, naming the best drop, with nothing written."""
    from rep_backbones.deploy import quantize
    from tests.helpers import load_tool

    def unreachable(*args, **kwargs):
        raise quantize.AccuracyTargetError('INT8 cannot meet --max-drop 0.01: drop 0.2345', 0.2345)
    monkeypatch.setattr(quantize, 'nncf_quantize_with_accuracy_control', unreachable)
    tool = load_tool('tools/deploy.py')
    monkeypatch.chdir(toy)
    argv = [CONFIG, str(toy / 'random.pth'), '--work-dir', str(tmp_path / 'cli'), '--backend', 'openvino',
            '--precision', 'int8', '--max-drop', '0.01', '--calib-n', '2', '--time-n', '1', '--rounds', '1',
            '--no-progress']
    assert tool.main(argv) == 2
    stderr = capsys.readouterr().err
    assert 'accuracy target not met' in stderr and 'best reachable drop: 0.2345' in stderr
    assert not os.path.exists(tmp_path / 'cli') or not os.listdir(tmp_path / 'cli')


def _check_selection(card, out, names):
    """The card of an ``auto`` run lists ``names`` as tried, its rows agree with its own forms table, and the
    chosen candidate is the fastest of those within the bound; the folder holds that artifact only."""
    from rep_backbones.deploy.select import ARTIFACTS
    sel = card['selection']
    rows = sel['candidates']
    assert [r['name'] for r in rows] == names
    for r in rows:
        if r['drop'] is None:                   # a candidate that failed before it could be scored
            assert r['name'] not in card['forms'] and r['status'].startswith('rejected: ')
            assert r['network_ms'] is None
            continue
        form = card['forms'][r['name']]
        assert r['metric'] == form['primary'] and r['median_ms'] == form['latency']['median_ms']
        # the graph alone, timed apart: less than image in -> detections out, which runs it too
        assert 0 < r['network_ms'] < r['median_ms']
        assert r['drop'] == pytest.approx(card['forms'][f"{r['backend']} fp32"]['primary'] - r['metric'], abs=1e-12)
    admissible = [r for r in rows if r['drop'] is not None and r['drop'] <= sel['max_drop']]
    assert {r['name'] for r in rows if r['precision'] == 'fp32'} <= {r['name'] for r in admissible}
    chosen = [r for r in rows if r['status'] == 'chosen']
    assert [r['name'] for r in chosen] == [sel['chosen']]
    assert chosen[0]['median_ms'] == min(r['median_ms'] for r in admissible)
    assert all(r['status'].startswith('rejected: ') for r in rows if r not in admissible)
    assert (card['backend'], card['precision']) == (chosen[0]['backend'], chosen[0]['precision'])
    files = ARTIFACTS[chosen[0]['quantizer'] or 'fp32']
    assert card['artifact'] == files[0] and sorted(os.listdir(out)) == sorted(files + ['report.md', 'report.json'])
    assert json.loads((out / 'report.json').read_text())['selection'] == sel
    md = (out / 'report.md').read_text()
    for text in ['## Candidates', f"Chosen: **{sel['chosen']}**", sel['reason']] + names:
        assert text in md, text
    if chosen[0]['precision'] == 'int8' or not any(r['precision'] == 'int8' for r in admissible):
        assert chosen[0]['precision'] == 'int8' or 'no INT8 candidate met the bound' in sel['reason']


AUTO_NAMES = ['onnxruntime fp32', 'openvino fp32', 'onnxruntime INT8 (QDQ)', 'openvino INT8 (QDQ)',
              'openvino INT8 (NNCF)']


def test_auto_picks_the_fastest_within_the_bound(toy, monkeypatch, tmp_path):
    """--backend auto --precision auto: five candidates deployed, scored and timed in one run, the default
    bound; the card's own numbers show the chosen one is the fastest admissible."""
    from rep_backbones.deploy.select import DEFAULT_MAX_DROP
    card = _deploy(toy, monkeypatch, tmp_path, backend='auto', precision='auto')
    assert card['selection']['max_drop'] == DEFAULT_MAX_DROP
    assert list(card['forms']) == ['training form (mmdet)', 'fused PyTorch'] + AUTO_NAMES
    _check_selection(card, tmp_path / 'toy_retinanet_repghost_1_0x_auto_auto', AUTO_NAMES)
    assert not _leftovers(tmp_path)


def test_auto_goes_on_when_accuracy_control_fails(toy, monkeypatch, tmp_path):
    """--backend openvino --precision auto --max-drop: NNCF's accuracy control (made to fail here; its loop is
    tested above) rejects its own candidate with the best drop it reached, and the choice is made among the rest."""
    from rep_backbones.deploy import quantize

    def unreachable(*args, **kwargs):
        raise quantize.AccuracyTargetError('INT8 cannot meet --max-drop 0.02', 0.0456)
    monkeypatch.setattr(quantize, 'nncf_quantize_with_accuracy_control', unreachable)
    card = _deploy(toy, monkeypatch, tmp_path, backend='openvino', precision='auto', max_drop=0.02)
    names = ['openvino fp32', 'openvino INT8 (QDQ)', 'openvino INT8 (NNCF)']
    _check_selection(card, tmp_path / 'toy_retinanet_repghost_1_0x_openvino_auto', names)
    nncf = card['selection']['candidates'][2]
    assert nncf['status'] == 'rejected: NNCF accuracy control reached a drop of 0.0456 at best'
    assert card['selection']['chosen'] != 'openvino INT8 (NNCF)' and card['backend'] == 'openvino'
    assert '| openvino INT8 (NNCF) | openvino | int8 | NNCF | — | — | — | — | — | rejected' in (
        tmp_path / 'toy_retinanet_repghost_1_0x_openvino_auto' / 'report.md').read_text()


def test_auto_choice_rules():
    """The choice on given rows: the fastest admissible wins; no INT8 within the bound -> fp32, said in the
    reason; --precision int8 (fp32 rows are references only) with nothing within -> AccuracyTargetError."""
    from rep_backbones.deploy.quantize import AccuracyTargetError
    from rep_backbones.deploy.select import choose

    def rows(candidate_fp32=True):
        return [dict(name='a fp32', precision='fp32', candidate=candidate_fp32, drop=0.0, median_ms=30.0),
                dict(name='b fp32', precision='fp32', candidate=candidate_fp32, drop=0.0, median_ms=20.0),
                dict(name='a INT8', precision='int8', candidate=True, drop=0.02, median_ms=10.0),
                dict(name='b INT8', precision='int8', candidate=True, drop=0.005, median_ms=15.0)]
    chosen, reason = choose(rows(), 0.01)
    assert chosen['name'] == 'b INT8' and 'no INT8' not in reason
    chosen, reason = choose(rows(), 0.03)
    assert chosen['name'] == 'a INT8'
    table = rows()
    chosen, reason = choose(table, 0.001)
    assert chosen['name'] == 'b fp32' and 'no INT8 candidate met the bound (smallest drop 0.0050)' in reason
    assert [r['status'].split(':')[0].split(' (')[0] for r in table] == [
        'within the bound, slower', 'chosen', 'rejected', 'rejected']
    with pytest.raises(AccuracyTargetError, match='INT8 cannot meet --max-drop 0.001') as err:
        choose(rows(candidate_fp32=False), 0.001)
    assert err.value.best_drop == 0.005


def test_auto_refuses_a_negative_bound(toy, monkeypatch, tmp_path, capsys):
    """A negative --max-drop with auto: fp32 (drop 0 by definition) could not meet it either, so it is refused
    before any work, by the library (ValueError) and the command line (exit 2)."""
    from tests.helpers import load_tool
    with pytest.raises(ValueError, match='--max-drop -0.1 < 0'):
        _deploy(toy, monkeypatch, tmp_path, backend='auto', precision='auto', max_drop=-0.1)
    assert not os.listdir(tmp_path)
    argv = [CONFIG, str(toy / 'random.pth'), '--work-dir', str(tmp_path / 'cli'), '--backend', 'auto',
            '--precision', 'auto', '--max-drop', '-0.1']
    assert load_tool('tools/deploy.py').main(argv) == 2
    assert 'a negative bound rejects every candidate' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'cli')


@pytest.fixture(scope='module')
def toy_models(toy):
    """Seeded random checkpoints of the toy Mask R-CNN and the toy Semantic FPN (``data/toy_ade20k`` beside)."""
    require('mmseg')
    from rep_backbones.io.build import build_model_from_config
    from rep_backbones.toy_data import make_toy_ade20k
    make_toy_ade20k(toy / 'data' / 'toy_ade20k', num_train=4, num_val=2)
    for name in ('toy_mask_rcnn_repghost_1_0x', 'toy_fpn_repghost_1_0x_ade20k'):
        torch.manual_seed(0)
        model = build_model_from_config(str(ROOT / 'configs' / 'toy' / f'{name}.py'))
        torch.save({'meta': {}, 'state_dict': model.state_dict()}, toy / f'{name}.pth')
    return toy


def test_segmentor(toy_models, monkeypatch, tmp_path):
    """A segmentor: logits in the backend, mmseg's IoUMetric (aAcc / mIoU / mAcc) for every form."""
    name = 'toy_fpn_repghost_1_0x_ade20k'
    card = _deploy(toy_models, monkeypatch, tmp_path, f'{name}.pth', str(ROOT / 'configs' / 'toy' / f'{name}.py'),
                   precision='int8')
    assert list(card['forms']) == ['training form (mmseg)', 'fused PyTorch', 'deployed fp32', 'deployed INT8']
    assert card['metric_keys'] == ['aAcc', 'mIoU', 'mAcc']
    assert card['stages'].startswith('backbone, neck and decode head in the backend')
    assert [tuple(p['shape']) for p in card['parity']] == [(1, 150, 64, 80)]
    assert all(f['primary'] == f['metrics']['mIoU'] / 100 for f in card['forms'].values())


@pytest.mark.slow
def test_mask_rcnn(toy_models, monkeypatch, tmp_path):
    """Mask R-CNN: backbone and neck in the backend (the card says so), the RoI stage in PyTorch; bbox and mask
    mAP for every form, and the fp32 deployment scores as fused PyTorch does."""
    name = 'toy_mask_rcnn_repghost_1_0x'
    card = _deploy(toy_models, monkeypatch, tmp_path, f'{name}.pth', str(ROOT / 'configs' / 'toy' / f'{name}.py'),
                   backend='openvino')
    assert card['stages'] == 'backbone and neck in the backend; RPN, RoI align, box and mask heads in PyTorch'
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(card['metric_keys'])
    assert len(card['parity']) == 5 and min(p['sqnr_db'] for p in card['parity']) >= FP32_SQNR_MIN_DB
    forms = card['forms']
    assert forms['deployed fp32']['primary'] == forms['deployed fp32']['metrics']['coco/segm_mAP']
    assert forms['deployed fp32']['metrics']['coco/bbox_mAP'] == pytest.approx(
        forms['fused PyTorch']['metrics']['coco/bbox_mAP'], abs=0.02)


def test_unfused_model_is_refused(toy, monkeypatch, tmp_path):
    from rep_backbones.deploy.quantize import UnfusedModelError
    with pytest.raises(UnfusedModelError, match='is not fused'):
        _deploy(toy, monkeypatch, tmp_path, fuse=False)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize('folder', ['missing', 'empty'])
def test_bad_calibration_folder(toy, monkeypatch, tmp_path, folder):
    from rep_backbones.deploy.data import CalibrationDataError
    calib = tmp_path / 'calib'
    if folder == 'empty':
        calib.mkdir()
        (calib / 'notes.txt').write_text('not an image')
    work = tmp_path / 'work'
    with pytest.raises(CalibrationDataError, match='does not exist' if folder == 'missing' else 'holds no images'):
        _deploy(toy, monkeypatch, work, precision='int8', calib_dir=str(calib))
    assert not _leftovers(work) and not os.path.exists(work / 'toy_retinanet_repghost_1_0x_onnxruntime_int8')


def test_failure_keeps_the_previous_artifact(toy, monkeypatch, tmp_path):
    """A deploy that fails after the export leaves the artifact of an earlier run as it was."""
    from rep_backbones.deploy.data import CalibrationDataError
    out = tmp_path / 'toy_retinanet_repghost_1_0x_onnxruntime_int8'
    out.mkdir()
    (out / 'model.int8.onnx').write_bytes(b'earlier run')
    with pytest.raises(CalibrationDataError):
        _deploy(toy, monkeypatch, tmp_path, precision='int8', calib_dir=str(tmp_path / 'nowhere'))
    assert os.listdir(out) == ['model.int8.onnx'] and (out / 'model.int8.onnx').read_bytes() == b'earlier run'
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_unreadable_graph_names_the_backend(tmp_path, backend):
    from rep_backbones.deploy.runtimes import BackendError, Session
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'not a graph')
    with pytest.raises(BackendError, match=f'{backend} cannot take the graph .*bad.onnx'):
        Session(backend, bad, 1)


def test_runtimes_agree(tmp_path):
    """Both runtimes give the network's outputs, in the graph's order, from the same ONNX file."""
    from rep_backbones.deploy.export import export_onnx
    from rep_backbones.deploy.runtimes import Session
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 4, 3).eval()
    x = torch.randn(1, 3, 16, 20)
    export_onnx(net, x, tmp_path / 'net.onnx')
    for backend in ('onnxruntime', 'openvino'):
        out = Session(backend, tmp_path / 'net.onnx', 1).run(x.numpy())
        np.testing.assert_allclose(out[0], net(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_tool_cli_bad_input(toy, tmp_path):
    """The command line: exit status 2, the reason on stderr, nothing written."""
    empty = tmp_path / 'empty'
    empty.mkdir()
    result = run_tool('tools/deploy.py', CONFIG, toy / 'random.pth', '--work-dir', tmp_path / 'w',
                      '--precision', 'int8', '--calib-dir', empty, '--no-progress', cwd=toy,
                      env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'CalibrationDataError' in result.stderr and 'holds no images' in result.stderr
    assert not os.path.exists(tmp_path / 'w') or not os.listdir(tmp_path / 'w')
