"""Deterministic toy COCO instance-segmentation set (no download needed).

:func:`make_toy_coco` writes mmdet's default ``CocoDataset`` layout
(``annotations/instances_{train,val}2017.json``, ``{train,val}2017/*.jpg``): four shape categories,
each with its own strong colour (the palette below, also the configs' visualisation palette),
exact polygon masks, on muted photo backgrounds (:mod:`.drawing`).

The defaults make the set the main job (``tools/demo.py``) learns in minutes on a CPU: 1-3 objects
per image, each 25-65 % of the short side. ``object_size`` / ``max_objects`` give COCO-like
variety (small to large, crowded) when wanted. Same parameters -> byte-identical files; a stamp
file makes repeated calls no-ops. Uses numpy, Pillow and pycocotools; nothing from OpenMMLab.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from . import drawing as draw

__all__ = ['make_toy_coco', 'toy_coco_metainfo', 'TOY_COCO_CLASSES', 'TOY_COCO_PALETTE']

_VERSION = 3

TOY_COCO_CLASSES = ('circle', 'square', 'triangle', 'star')
#: drawing colours (RGB); configs/toy/_base_/toy_coco.py uses the same palette for its metainfo
TOY_COCO_PALETTE = [(225, 30, 40), (30, 80, 235), (25, 185, 60), (250, 205, 20)]


def toy_coco_metainfo() -> dict:
    """``metainfo`` for mmdet's ``CocoDataset`` on the toy set."""
    return dict(classes=TOY_COCO_CLASSES, palette=[tuple(c) for c in TOY_COCO_PALETTE])


def _shape_polygon(rng: np.random.Generator, cat: int, size: float) -> np.ndarray:
    """Polygon (Nx2, x/y) centred on the origin; ``size`` is the approximate diameter."""
    r = size / 2
    rot = rng.uniform(0, 2 * math.pi)
    if cat == 0:  # circle
        return draw.regular_polygon(0, 0, r, int(np.clip(r * 0.8, 12, 48)), rot)
    if cat == 1:  # square / mildly rectangular, modestly rotated
        aspect = rng.uniform(0.75, 1.33)
        hw, hh = r * math.sqrt(aspect) * 0.85, r / math.sqrt(aspect) * 0.85
        corners = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        t = rng.uniform(-0.45, 0.45)
        rmat = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        return corners @ rmat.T
    if cat == 2:  # triangle (near-equilateral)
        a = rot + np.array([0, 2 * math.pi / 3, 4 * math.pi / 3]) + rng.uniform(-0.15, 0.15, size=3)
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    outer = draw.regular_polygon(0, 0, r, 5, rot)  # five-pointed star
    inner = draw.regular_polygon(0, 0, r * 0.45, 5, rot + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _coco_image(rng: np.random.Generator, h: int, w: int, max_objects: int, object_size: Tuple[float, float]):
    """One image (float32 HxWx3) and its ``[(category, polygon)]``; shapes never overlap."""
    img = draw.background(rng, h, w)
    occupied = np.zeros((h, w), bool)
    short = min(h, w)
    lo, hi = math.log(max(8.0, object_size[0] * short)), math.log(object_size[1] * short)
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cat = int(rng.integers(len(TOY_COCO_CLASSES)))
        size = math.exp(rng.uniform(lo, hi))  # log-uniform scale
        for _attempt in range(25):
            poly = _shape_polygon(rng, cat, size)
            (x0, y0), (x1, y1) = poly.min(0), poly.max(0)
            if x1 - x0 > w - 4 or y1 - y0 > h - 4:
                size *= 0.8
                continue
            cx = rng.uniform(2 - x0, w - 2 - x1)
            cy = rng.uniform(2 - y0, h - 2 - y1)
            cand = np.round(poly + [cx, cy], 1)
            mask = draw.poly_mask(cand, h, w)
            # bounding boxes may overlap, the shapes themselves (plus a 2 px margin) may not:
            # masks stay exact (fully visible) polygons
            if mask.sum() < 16 or (mask & occupied).any():
                size *= 0.9
                continue
            occupied |= draw.poly_mask(cand, h, w, margin=2)
            draw.paint_colour(rng, img, mask, TOY_COCO_PALETTE[cat])
            objects.append((cat, cand))
            break
    return img, objects


def _coco_annotation(cat: int, poly: np.ndarray, h: int, w: int, ann_id: int, image_id: int) -> dict:
    from pycocotools import mask as mask_utils
    flat = [float(v) for v in poly.reshape(-1)]
    rle = mask_utils.merge(mask_utils.frPyObjects([flat], h, w))
    x0, y0 = float(poly[:, 0].min()), float(poly[:, 1].min())
    x1, y1 = float(poly[:, 0].max()), float(poly[:, 1].max())
    return dict(id=ann_id, image_id=image_id, category_id=cat + 1, segmentation=[flat],
                area=float(mask_utils.area(rle)), bbox=[round(x0, 1), round(y0, 1), round(x1 - x0, 1),
                                                        round(y1 - y0, 1)], iscrowd=0)


def make_toy_coco(root='data/toy_coco', num_train: int = 160, num_val: int = 40, image_size=(160, 192),
                  seed: int = 0, max_objects: int = 3, object_size=(0.25, 0.65)) -> Dict[str, str]:
    """Write (or reuse) the toy COCO instance-segmentation set under ``root``.

    Args:
        image_size: ``(H, W)`` (or one int) of every image, at least 64.
        max_objects: 1 to ``max_objects`` objects per image (fewer when they do not fit).
        object_size: ``(min, max)`` object diameter as a fraction of the short side (log-uniform).

    Returns a dict with ``root``, ``train_ann``, ``val_ann``, ``train_img_dir``, ``val_img_dir``
    (absolute paths as strings). For mmdet, use ``configs/toy/_base_/toy_coco.py`` or the stock
    ``coco_instance.py`` base with ``data_root=root`` and ``metainfo=toy_coco_metainfo()``.
    """
    h, w = draw.check_size(image_size)
    if int(max_objects) < 1:
        raise ValueError(f'max_objects must be at least 1, got {max_objects}')
    lo, hi = (float(s) for s in object_size)
    if not 0 < lo <= hi <= 1:
        raise ValueError(f'object_size must be (min, max) fractions of the short side with 0 < min <= max <= 1, '
                         f'got {tuple(object_size)}')
    root = Path(root).absolute()
    params = dict(generator='toy_coco', version=_VERSION, num_train=int(num_train), num_val=int(num_val),
                  image_size=[h, w], seed=int(seed), max_objects=int(max_objects), object_size=[lo, hi],
                  sources=draw.available([n for n, _ in draw.BACKGROUND_SOURCES]))
    splits = [('train2017', int(num_train), 0), ('val2017', int(num_val), 1)]
    paths = dict(root=str(root), train_ann=str(root / 'annotations' / 'instances_train2017.json'),
                 val_ann=str(root / 'annotations' / 'instances_val2017.json'),
                 train_img_dir=str(root / 'train2017'), val_img_dir=str(root / 'val2017'))
    expected = [Path(paths['train_ann']), Path(paths['val_ann'])]
    expected += [root / name / f'{i + 1:012d}.jpg' for name, count, _ in splits for i in range(count)]
    stamp = root / '.toy_coco_stamp.json'
    if draw.stamp_ok(stamp, params, expected):
        return paths

    if stamp.exists():
        stamp.unlink()
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    categories = [dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(TOY_COCO_CLASSES)]
    for name, count, split_code in splits:
        img_dir = root / name
        img_dir.mkdir(parents=True, exist_ok=True)
        draw.clear(img_dir, '0' * 6 + '*.jpg')
        images, annotations = [], []
        for i in range(count):
            image_id = i + 1
            img, objects = _coco_image(draw.image_rng(seed, split_code, i), h, w, int(max_objects), (lo, hi))
            file_name = f'{image_id:012d}.jpg'
            draw.write_jpeg(img, img_dir / file_name)
            images.append(dict(id=image_id, file_name=file_name, height=h, width=w, license=1))
            for cat, poly in objects:
                annotations.append(_coco_annotation(cat, poly, h, w, len(annotations) + 1, image_id))
        coco = dict(info=dict(description='rep_backbones toy COCO (synthetic shapes on public-domain/CC0 '
                                          'backgrounds from scikit-image)', version=str(_VERSION),
                              year=2024, contributor='rep_backbones', date_created=''),
                    licenses=[dict(id=1, name='CC0 / public domain', url='')],
                    images=images, annotations=annotations, categories=categories)
        with open(root / 'annotations' / f'instances_{name}.json', 'w') as f:
            json.dump(coco, f, separators=(',', ':'))
    stamp.write_text(json.dumps(params, sort_keys=True))
    return paths
