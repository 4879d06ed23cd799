"""Toy dataset generators: determinism, idempotence, layout, annotation validity, mm loaders."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rep_backbones.toy_data import TOY_ADE_LABELS, TOY_COCO_CLASSES, make_toy_ade20k, make_toy_coco, toy_coco_metainfo

from .helpers import ROOT, require, run_ok, run_tool_ok

SIZE = (160, 208)  # (H, W)
N_TRAIN, N_VAL = 16, 6


def _tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('toy_coco')
    make_toy_coco(root, num_train=N_TRAIN, num_val=N_VAL, image_size=SIZE, seed=0)
    return root


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('toy_ade')
    make_toy_ade20k(root, num_train=N_TRAIN, num_val=N_VAL, image_size=SIZE, seed=0)
    return root


# ----------------------------------------------------------------------------- determinism / idempotence
@pytest.mark.parametrize('make', [make_toy_coco, make_toy_ade20k])
def test_deterministic(make, tmp_path):
    a, b, c = tmp_path / 'a', tmp_path / 'b', tmp_path / 'c'
    make(a, num_train=5, num_val=2, image_size=(96, 128), seed=3)
    make(b, num_train=5, num_val=2, image_size=(96, 128), seed=3)
    make(c, num_train=5, num_val=2, image_size=(96, 128), seed=4)
    files_a, files_b, files_c = _tree_bytes(a), _tree_bytes(b), _tree_bytes(c)
    assert files_a == files_b
    assert files_a.keys() == files_c.keys()
    assert any(files_a[k] != files_c[k] for k in files_a if k.endswith('.jpg'))


def test_prefix_stable(tmp_path):
    """Image i does not depend on how many images are generated."""
    make_toy_ade20k(tmp_path / 'small', num_train=2, num_val=1, image_size=(96, 128))
    make_toy_ade20k(tmp_path / 'big', num_train=4, num_val=1, image_size=(96, 128))
    for rel in ('images/training/ADE_train_00000002.jpg', 'annotations/training/ADE_train_00000002.png'):
        assert (tmp_path / 'small' / rel).read_bytes() == (tmp_path / 'big' / rel).read_bytes()


@pytest.mark.parametrize('make,pattern', [(make_toy_coco, 'train2017/*.jpg'),
                                          (make_toy_ade20k, 'images/training/*.jpg')])
def test_idempotent_and_regenerates(make, pattern, tmp_path):
    make(tmp_path, num_train=4, num_val=1, image_size=(96, 128))
    files = sorted(tmp_path.glob(pattern))
    mtimes = [f.stat().st_mtime_ns for f in files]
    os.utime(files[0], ns=(1, 1))  # a rerun with the same parameters must not rewrite anything
    make(tmp_path, num_train=4, num_val=1, image_size=(96, 128))
    assert files[0].stat().st_mtime_ns == 1
    assert [f.stat().st_mtime_ns for f in files[1:]] == mtimes[1:]
    make(tmp_path, num_train=2, num_val=1, image_size=(96, 128))  # new parameters: rewritten, stale files gone
    assert len(sorted(tmp_path.glob(pattern))) == 2
    assert files[0].stat().st_mtime_ns != 1
    files[1].unlink()  # a missing file invalidates the stamp
    make(tmp_path, num_train=2, num_val=1, image_size=(96, 128))
    assert files[1].is_file()


def test_fallback_without_skimage_images(tmp_path, monkeypatch):
    """Without the bundled photos the generators fall back to generated noise backgrounds."""
    from rep_backbones.toy_data import drawing as toy_drawing

    toy_drawing.load_source.cache_clear()
    monkeypatch.setattr(toy_drawing, '_skimage_data_dir', lambda: None)
    try:
        paths = make_toy_coco(tmp_path / 'coco', num_train=2, num_val=1, image_size=(96, 128))
        make_toy_ade20k(tmp_path / 'ade', num_train=2, num_val=1, image_size=(96, 128))
    finally:
        toy_drawing.load_source.cache_clear()
    assert json.loads(Path(paths['train_ann']).read_text())['annotations']
    assert len(list((tmp_path / 'ade' / 'annotations' / 'training').glob('*.png'))) == 2


# ----------------------------------------------------------------------------- toy COCO
def test_coco_layout_and_annotations(coco_root):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    h, w = SIZE
    for split, count in (('train2017', N_TRAIN), ('val2017', N_VAL)):
        ann_file = coco_root / 'annotations' / f'instances_{split}.json'
        coco = COCO(str(ann_file))
        assert sorted(c['name'] for c in coco.loadCats(coco.getCatIds())) == sorted(TOY_COCO_CLASSES)
        assert len(coco.getImgIds()) == count
        assert len(list((coco_root / split).glob('*.jpg'))) == count
        for img_id in coco.getImgIds():
            info = coco.loadImgs(img_id)[0]
            with Image.open(coco_root / split / info['file_name']) as im:
                assert im.format == 'JPEG' and im.mode == 'RGB' and im.size == (w, h)
            assert (info['height'], info['width']) == (h, w)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            assert anns, 'every image has at least one object'
            union = np.zeros((h, w), np.int32)
            for ann in anns:
                assert ann['iscrowd'] == 0
                assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann['segmentation'])
                x, y, bw, bh = ann['bbox']
                assert bw > 0 and bh > 0 and x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
                m = coco.annToMask(ann)
                assert m.sum() > 0
                ys, xs = np.nonzero(m)
                assert abs(xs.min() - x) <= 2 and abs(ys.min() - y) <= 2  # sharp tips may lose a pixel
                assert abs(xs.max() + 1 - (x + bw)) <= 2 and abs(ys.max() + 1 - (y + bh)) <= 2
                rle = mask_utils.encode(np.asfortranarray(m))
                assert abs(ann['area'] - float(mask_utils.area(rle))) <= 1
                union += m
            assert union.max() == 1, 'shapes never overlap (masks are fully visible polygons)'


def test_coco_content_variety(tmp_path):
    """COCO-like variety on request: all categories, small (< 32 px) and large (> 128 px) objects."""
    make_toy_coco(tmp_path, num_train=40, num_val=1, image_size=(256, 320), max_objects=5, object_size=(0.06, 0.85))
    data = json.loads((tmp_path / 'annotations' / 'instances_train2017.json').read_text())
    cats = {a['category_id'] for a in data['annotations']}
    assert cats == {1, 2, 3, 4}
    sides = np.sqrt([a['area'] for a in data['annotations']])
    assert sides.min() < 32 and sides.max() > 128  # small and large objects (COCO small / large)
    boxes = np.array([a['bbox'] for a in data['annotations']])
    assert len(boxes) > 80


def test_coco_defaults_are_the_easy_main_job_set(tmp_path):
    """Defaults: 1-3 objects per image, mostly 25-65 % of the short side (a box may be up to 1.25x
    the shape's nominal diameter; a shape that does not fit is shrunk)."""
    make_toy_coco(tmp_path, num_train=30, num_val=1)
    data = json.loads((tmp_path / 'annotations' / 'instances_train2017.json').read_text())
    h, w = data['images'][0]['height'], data['images'][0]['width']
    per_image = np.bincount([a['image_id'] for a in data['annotations']], minlength=31)[1:]
    assert per_image.min() >= 1 and per_image.max() <= 3 and per_image.max() > 1
    longest = np.array([max(a['bbox'][2:]) for a in data['annotations']]) / min(h, w)
    assert longest.min() > 0.08 and np.median(longest) > 0.25 and longest.max() < 0.65 * 1.25
    assert {a['category_id'] for a in data['annotations']} == {1, 2, 3, 4}


@pytest.mark.parametrize('kwargs,match', [(dict(max_objects=0), 'max_objects'),
                                          (dict(object_size=(0.5, 0.2)), 'object_size'),
                                          (dict(object_size=(0.1, 1.5)), 'object_size'),
                                          (dict(image_size=(32, 128)), 'image_size')])
def test_coco_bad_arguments_are_named(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        make_toy_coco(tmp_path, num_train=1, num_val=1, **kwargs)


def test_toy_configs_use_the_generator_classes_and_palette():
    """configs/toy/_base_/toy_coco.py cannot import the generator (mmengine configs): checked here."""
    from mmengine.config import Config

    root = Path(__file__).resolve().parents[1] / 'configs' / 'toy'
    for name in ('toy_retinanet_repghost_1_0x.py', 'toy_mask_rcnn_repghost_1_0x.py'):
        cfg = Config.fromfile(str(root / name))
        for split in ('train', 'val', 'test'):
            meta = cfg[f'{split}_dataloader'].dataset.metainfo
            assert tuple(meta['classes']) == TOY_COCO_CLASSES
            assert [tuple(c) for c in meta['palette']] == toy_coco_metainfo()['palette']


def test_coco_colours_distinct(coco_root):
    """Objects show their category colour in the JPEG (the learnable cue)."""
    from pycocotools.coco import COCO

    palette = np.array(toy_coco_metainfo()['palette'], np.float32)
    coco = COCO(str(coco_root / 'annotations' / 'instances_train2017.json'))
    hits = total = 0
    for ann in coco.loadAnns(coco.getAnnIds()):
        if ann['area'] < 100:
            continue
        info = coco.loadImgs(ann['image_id'])[0]
        img = np.asarray(Image.open(coco_root / 'train2017' / info['file_name']), np.float32)
        mean = img[coco.annToMask(ann).astype(bool)].mean(0)
        hits += int(np.argmin(((palette - mean) ** 2).sum(1)) == ann['category_id'] - 1)
        total += 1
    assert total and hits == total


# ----------------------------------------------------------------------------- toy ADE20K
def test_ade_layout_and_labels(ade_root):
    h, w = SIZE
    allowed = {0, *TOY_ADE_LABELS.values()}
    assert all(1 <= v <= 150 for v in TOY_ADE_LABELS.values())
    seen = set()
    for split, short, count in (('training', 'train', N_TRAIN), ('validation', 'val', N_VAL)):
        imgs = sorted((ade_root / 'images' / split).glob('*.jpg'))
        anns = sorted((ade_root / 'annotations' / split).glob('*.png'))
        assert len(imgs) == len(anns) == count
        assert [p.stem for p in imgs] == [p.stem for p in anns]
        assert imgs[0].name == f'ADE_{short}_00000001.jpg'
        for img_path, ann_path in zip(imgs, anns):
            with Image.open(img_path) as im:
                assert im.format == 'JPEG' and im.mode == 'RGB' and im.size == (w, h)
            with Image.open(ann_path) as lab:
                assert lab.format == 'PNG' and lab.mode == 'L' and lab.size == (w, h)
                values = set(np.unique(np.asarray(lab)).tolist())
            assert values <= allowed
            assert values - {0}, 'every image has labelled pixels'
            seen |= values
    assert len(seen) >= 5


# ----------------------------------------------------------------------------- mm loaders
def test_mmdet_coco_dataset_reads_toy_coco(coco_root):
    require('mmcv.ops', 'mmdet')
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope

    register_all_modules(init_default_scope=False)
    pipeline = [  # the train pipeline of mmdet's configs/_base_/datasets/coco_instance.py (smaller scale)
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='Resize', scale=(320, 256), keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs'),
    ]
    n_anns = len(json.loads((coco_root / 'annotations' / 'instances_train2017.json').read_text())['annotations'])
    with DefaultScope.overwrite_default_scope('mmdet'):
        ds = CocoDataset(data_root=str(coco_root), ann_file='annotations/instances_train2017.json',
                         data_prefix=dict(img='train2017/'), metainfo=toy_coco_metainfo(),
                         filter_cfg=dict(filter_empty_gt=True, min_size=32), pipeline=pipeline)
        assert len(ds) == N_TRAIN
        assert ds.metainfo['classes'] == TOY_COCO_CLASSES
        assert sum(len(ds.get_data_info(i)['instances']) for i in range(len(ds))) == n_anns
        for i in range(3):
            sample = ds[i]
            gt = sample['data_samples'].gt_instances
            expected = len(ds.get_data_info(i)['instances'])
            assert len(gt) == expected and gt.masks.masks.shape[0] == expected
            assert gt.masks.masks.reshape(expected, -1).sum(1).min() > 0
            assert int(gt.labels.max()) < len(TOY_COCO_CLASSES)
            assert tuple(sample['inputs'].shape[0:1]) == (3,)


def test_mmseg_ade20k_dataset_reads_toy_ade(ade_root):
    require('mmcv.ops', 'mmseg')
    from mmengine.registry import DefaultScope
    from mmseg.datasets import ADE20KDataset
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    classes = ADE20KDataset.METAINFO['classes']
    assert len(classes) == 150
    for name, value in TOY_ADE_LABELS.items():
        assert classes[value - 1].strip() == name
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
                dict(type='PackSegInputs')]
    allowed = {255, *(v - 1 for v in TOY_ADE_LABELS.values())}
    with DefaultScope.overwrite_default_scope('mmseg'):
        for split, count in (('training', N_TRAIN), ('validation', N_VAL)):
            ds = ADE20KDataset(data_root=str(ade_root),
                               data_prefix=dict(img_path=f'images/{split}', seg_map_path=f'annotations/{split}'),
                               pipeline=pipeline)
            assert len(ds) == count
            sample = ds[0]
            seg = sample['data_samples'].gt_sem_seg.data
            assert tuple(seg.shape[-2:]) == SIZE
            assert set(seg.unique().tolist()) <= allowed


def test_module_cli_lists_each_datasets_options(capsys):
    """``python -m rep_backbones.toy_data ade20k --help`` shows ade20k's own options (the dataset name picks
    the command before any option is read); an unknown name is refused with the choices."""
    from rep_backbones.toy_data.__main__ import main
    with pytest.raises(SystemExit) as exit_:
        main(['ade20k', '--help'])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert 'python -m rep_backbones.toy_data ade20k' in out and 'ADE20K' in out and '--num-train' in out
    with pytest.raises(SystemExit):
        main(['voc'])
    assert "invalid choice: 'voc'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.tools
@pytest.mark.parametrize('script, dataset', [('detection/prepare_toy_coco.py', 'coco'),
                                             ('segmentation/prepare_toy_ade20k.py', 'ade20k')])
def test_prepare_scripts_and_module_cli_write_the_same_set(script, dataset, tmp_path):
    """``python detection/prepare_toy_coco.py`` (a thin script) and ``python -m rep_backbones.toy_data coco``
    write byte-identical sets for the same arguments. The script runs in this process (:func:`run_tool_ok`:
    no interpreter start-up); ``-m`` in a new interpreter, as the documented way to start the generator."""
    args = ['--num-train', '2', '--num-val', '1', '--size', '64', '80']
    run_tool_ok(script, '--root', tmp_path / 'script', *args, cwd=tmp_path)
    run_ok([sys.executable, '-m', 'rep_backbones.toy_data', dataset, '--root', str(tmp_path / 'module'), *args],
           cwd=ROOT)
    files = sorted(p.relative_to(tmp_path / 'script') for p in (tmp_path / 'script').rglob('*') if p.is_file())
    assert len(files) >= 4
    for rel in files:
        assert (tmp_path / 'script' / rel).read_bytes() == (tmp_path / 'module' / rel).read_bytes(), rel
