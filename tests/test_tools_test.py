"""``tools/test.py``'s outputs as mmdet's / mmseg's own test scripts make them: ``--out FILE.pkl``
(mmdet ``DumpDetResults`` with RLE masks; mmseg ``DumpResults``), ``--show-dir DIR`` (prediction
pictures from the visualization hook), ``--out-json`` — on the toy configs with two tiny generated
images and a random-init checkpoint, fused by RepFuseHook as usual."""
from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
import torch

from rep_backbones.toy_data import make_toy_ade20k, make_toy_coco

from .helpers import require, run, run_ok

pytestmark = [pytest.mark.slow, pytest.mark.mm, pytest.mark.tools]

ROOT = Path(__file__).resolve().parents[1]
DET_CFG = ROOT / 'configs' / 'toy' / 'toy_mask_rcnn_repghost_1_0x.py'
SEG_CFG = ROOT / 'configs' / 'toy' / 'toy_fpn_repghost_1_0x_ade20k.py'
SMALL_BACKBONE = {'model.backbone.arch': '0.5x', 'model.neck.in_channels': [12, 20, 56, 80]}


def _random_checkpoint(config: Path, path: Path) -> Path:
    """Save a seeded random-init model of ``config`` (small backbone) as an mmengine checkpoint."""
    require('mmdet', 'mmseg')
    from rep_backbones.io.build import build_model_from_config
    torch.manual_seed(0)
    model = build_model_from_config(str(config), None, cfg_options=SMALL_BACKBONE)
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, path)
    return path


def _test_tool(config: Path, checkpoint: Path, work: Path, options: list, cfg_options: list) -> str:
    """Run ``python tools/test.py`` as a user does; returns its log."""
    cfg_options = [f'{k}={v}'.replace(' ', '') for k, v in SMALL_BACKBONE.items()] + cfg_options
    return run_ok([sys.executable, 'tools/test.py', config, checkpoint, '--work-dir', work, *options,
                   '--cfg-options', *cfg_options], env={'OMP_NUM_THREADS': '1'})


def test_detection_out_pkl_show_dir_json(tmp_path):
    root = tmp_path / 'coco'
    make_toy_coco(str(root), num_train=1, num_val=2, image_size=(64, 80))
    ckpt = _random_checkpoint(DET_CFG, tmp_path / 'random.pth')
    ann = root / 'annotations' / 'instances_val2017.json'
    data = [f'test_dataloader.dataset.data_root={root}/', f'test_evaluator.ann_file={ann}',
            'test_dataloader.batch_size=2', 'test_dataloader.dataset.pipeline.1.scale=(80,64)']
    log = _test_tool(DET_CFG, ckpt, tmp_path / 'work', ['--out', str(tmp_path / 'pred.pkl'), '--show-dir',
                     str(tmp_path / 'vis'), '--out-json', str(tmp_path / 'metrics.json')], data)
    assert 'RepFuseHook (test): fused backbone' in log

    with open(tmp_path / 'pred.pkl', 'rb') as f:
        predictions = pickle.load(f)    # our own file, written by the tool just now
    assert len(predictions) == 2
    assert all('gt_instances' not in p for p in predictions)          # DumpDetResults drops ground truth
    masks = [m for p in predictions for m in p['pred_instances']['masks']]
    assert masks, 'a random-init Mask R-CNN still predicts masks above its 0.05 score threshold'
    assert all(set(m) == {'size', 'counts'} for m in masks)            # COCO RLE
    assert all(len(p['pred_instances']['masks']) == len(p['pred_instances']['scores']) for p in predictions)

    val_images = sorted(p.name for p in (root / 'val2017').iterdir())
    assert sorted(p.name for p in (tmp_path / 'vis').iterdir()) == val_images
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metrics)


def test_segmentation_out_pkl_show_dir(tmp_path):
    root = tmp_path / 'ade'
    make_toy_ade20k(str(root), num_train=1, num_val=2, image_size=(64, 80))
    ckpt = _random_checkpoint(SEG_CFG, tmp_path / 'random.pth')
    # only the test set is given: the training data root of the config does not exist here
    data = [f'test_dataloader.dataset.data_root={root}', 'test_dataloader.dataset.pipeline.1.scale=(80,64)',
            'default_hooks.visualization.interval=1']
    _test_tool(SEG_CFG, ckpt, tmp_path / 'work', ['--out', str(tmp_path / 'pred.pkl'), '--show-dir',
               str(tmp_path / 'vis')], data)

    with open(tmp_path / 'pred.pkl', 'rb') as f:
        predictions = pickle.load(f)    # our own file, written by the tool just now
    assert len(predictions) == 2
    for p in predictions:
        seg = p['pred_sem_seg']['data']
        assert seg.shape[-2:] == tuple(p['ori_shape'])            # at the original image size
    pictures = sorted((tmp_path / 'vis').rglob('*.png'))
    assert len(pictures) == 2, pictures


def test_out_must_be_pickle(tmp_path):
    proc = run([sys.executable, 'tools/test.py', DET_CFG, 'x.pth', '--out', 'pred.json'], timeout=120)
    assert proc.returncode == 2 and '--out pred.json: the predictions file must end with .pkl' in proc.stderr


def test_prediction_dump_is_atomic(tmp_path, monkeypatch):
    """``--out``'s dump metric writes through a temporary file: a dump that fails half-way leaves the previous
    file as it was and nothing else; a dump that succeeds writes the results as mmengine's own would."""
    import mmengine.fileio
    from mmengine.evaluator import DumpResults

    from rep_backbones.mm.runner_utils import atomic_dump_metric
    out = tmp_path / 'pred.pkl'
    out.write_bytes(pickle.dumps(['previous']))
    metric_class = atomic_dump_metric(DumpResults)
    assert metric_class.__name__ == 'AtomicDumpResults' and issubclass(metric_class, DumpResults)
    assert metric_class(out_file_path=str(out)).compute_metrics([{'a': 1}]) == {}
    assert pickle.loads(out.read_bytes()) == [{'a': 1}]

    def dump_half_then_fail(obj, file, file_format=None):
        Path(file).write_bytes(pickle.dumps(obj)[:5])
        raise OSError('disk full')
    monkeypatch.setattr(mmengine.fileio, 'dump', dump_half_then_fail)
    with pytest.raises(OSError, match='disk full'):
        atomic_dump_metric(DumpResults)(out_file_path=str(out)).compute_metrics([{'b': 2}])
    assert pickle.loads(out.read_bytes()) == [{'a': 1}]
    assert [p.name for p in tmp_path.iterdir()] == ['pred.pkl']
