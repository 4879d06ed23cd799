"""tools/demo.py end to end on a tiny schedule (the README's first command minus the environment
set-up): console progress, the four-form table in the console and in files, the pictures."""
import json
import sys

import pytest

from .helpers import load_tool, run

pytestmark = [pytest.mark.slow, pytest.mark.deploy]

demo = load_tool('tools/demo.py')
FORMS = ['training form', 'fused (RepFuseHook)', 'fused checkpoint, deploy config', 'onnxruntime']
# fused forms vs the training form, raw outputs (float32): the project's fusion tolerance; onnxruntime
# against PyTorch is within 1e-5 on these graphs (tests/test_tools_deploy.py holds exports to 1e-4)
RAW_RTOL = 1e-4


def test_main_job_on_a_tiny_schedule(tmp_path):
    work = tmp_path / 'demo'
    proc = run([sys.executable, 'tools/demo.py', '--work-dir', work, '--data-root', tmp_path / 'coco', '--iters', '2',
                '--num-train', '8', '--num-val', '4'], env={'OMP_NUM_THREADS': '1'}, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    # progress reaches the console: training and test iterations with ETA and time per iteration
    lines = proc.stdout.splitlines()
    assert any('Iter(train)' in line and 'eta:' in line and 'time:' in line for line in lines)
    assert any('Iter(test)' in line and 'eta:' in line for line in lines)
    assert not any('Warning' in line for line in lines)     # warnings stay in the log files
    assert (work / 'train.log').stat().st_size > len(proc.stdout) / 10   # the full log is in the file

    results = json.loads((work / 'results.json').read_text())
    assert [row['form'] for row in results['rows']] == FORMS
    for row in results['rows']:
        assert row['latency_ms'] > 0 and 0 <= row['bbox mAP@50'] <= 1
        assert f'| {row["form"]} |' in proc.stdout and f'| {row["form"]} |' in (work / 'results.md').read_text()
    # the fused forms compute what the training form computes: raw network outputs, each tensor against its
    # own scale (backbone + neck maps, scores and box deltas before the score threshold: two iterations
    # leave no detection above it, and every mAP is 0)
    # (above 0: float32 rounding differs between a fused network and the training form, so 0 would mean
    # the training form was compared with itself)
    assert results['rows'][0]['raw_max_rel_diff'] == 0
    for row in results['rows'][1:]:
        assert 0 < row['raw_max_rel_diff'] <= RAW_RTOL, row
    maps = [row['bbox mAP'] for row in results['rows']]
    assert max(maps) - min(maps) <= 1e-3
    assert (work / 'predictions.png').stat().st_size > 1000
    # two iterations leave the model without detections: validation gives no mAP, so no curve
    assert (work / 'learning_curve.png').exists() == bool(results['learning_curve'])


def test_table_lists_speed_up_against_the_training_form():
    rows = [dict(form='a', latency_ms=30.0, m=0.5), dict(form='b', latency_ms=15.0, m=0.5)]
    text = demo.table(rows, ['m'])
    assert text.splitlines()[2] == '| a | 0.500 | 30.0 | 1.00x |'
    assert text.splitlines()[3] == '| b | 0.500 | 15.0 | 2.00x |'


@pytest.mark.parametrize('argv,message', [(['--iters', '0'], '--iters'), (['--num-val', '0'], '--num-val'),
                                          (['--model', 'yolo'], 'invalid choice')])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        demo.parse_args(argv)
    assert message in capsys.readouterr().err


def test_schedule_options_keep_eight_validations():
    opts = demo.schedule_options(800)
    assert opts['train_cfg.max_iters'] == '800' and opts['train_cfg.val_interval'] == '100'
    assert opts['param_scheduler.1.end'] == '800' and opts['param_scheduler.0.end'] == '30'
    assert demo.schedule_options(4)['param_scheduler.0.end'] == '4'


def test_raw_check_of_a_two_stage_detector(tmp_path):
    """The demo's raw-output check on Mask R-CNN (random weights, random BN statistics): the fused forms and
    the backbone + neck graph agree with the training form, and a fused form that computes something else
    (stem bias + 0.1) is caught. Every form's RoI head runs on the training form's proposals: with its own,
    a last-bit difference before NMS can swap near-tied proposals, and RoIs that differ would be compared."""
    import copy

    import torch
    from mmdet.structures import DetDataSample

    import rep_backbones
    from rep_backbones.deploy.export import export_onnx
    from rep_backbones.io.build import TensorModeWrapper, build_model_from_config

    from .helpers import randomize_bn
    torch.manual_seed(0)
    model = randomize_bn(build_model_from_config('configs/toy/toy_mask_rcnn_repghost_1_0x.py')).eval()
    fused = rep_backbones.fuse(copy.deepcopy(model)).eval()
    wrong = copy.deepcopy(fused)
    wrong.backbone.conv_stem.bias.data += 0.1
    meta = dict(img_shape=(160, 192), ori_shape=(160, 192), scale_factor=(1.0, 1.0))
    data = dict(inputs=[torch.randint(0, 256, (3, 160, 192), dtype=torch.uint8)],
                data_samples=[DetDataSample(metainfo=meta)])
    graph = tmp_path / 'features.onnx'
    export_onnx(TensorModeWrapper(fused, 'features').eval(), fused.data_preprocessor(data, False)['inputs'], graph)
    diffs = demo.raw_output_differences({'training': model, 'fused': fused, 'wrong': wrong, 'onnxruntime': None},
                                        graph, data, threads=1)
    assert diffs['training'] == 0
    assert 0 < diffs['fused'] <= RAW_RTOL and 0 < diffs['onnxruntime'] <= RAW_RTOL, diffs
    assert diffs['wrong'] > 10 * RAW_RTOL, diffs
