"""Deterministic toy ADE20K-layout semantic-segmentation set (no download needed).

:func:`make_toy_ade20k` writes ``images/{training,validation}/*.jpg`` and
``annotations/{training,validation}/*.png`` whose label PNGs use a handful of the real ADE20K class
indices (0 = "other", ignored with ``reduce_zero_label=True``), so mmseg's 150-class
``ADE20KDataset`` metadata stays valid: "stuff" bands / patches with class-specific textures and
"things" with class-specific shapes and colours, on muted photo backgrounds
(:mod:`.drawing`). Same parameters -> byte-identical files; a stamp file makes
repeated calls no-ops. Uses numpy and Pillow; nothing from OpenMMLab.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

from . import drawing as draw

__all__ = ['make_toy_ade20k', 'TOY_ADE_LABELS']

_VERSION = 2

#: ADE20K label values (1-based indices into mmseg's ``ADE20KDataset.METAINFO['classes']``)
TOY_ADE_LABELS = {'wall': 1, 'sky': 3, 'road': 7, 'grass': 10, 'person': 13, 'car': 21, 'ball': 120}
_ADE_THING_COLOURS = {'car': (215, 30, 35), 'person': (245, 200, 30), 'ball': (225, 50, 210)}


def _band(rng: np.random.Generator, h: int, w: int, level: float, top: bool) -> np.ndarray:
    """Polygon of a horizontal band (top or bottom of the frame) with a wavy boundary."""
    xs = np.linspace(0, w, 17)
    amp = rng.uniform(0.02, 0.08) * h
    phase = rng.uniform(0, 2 * math.pi)
    freq = rng.uniform(0.5, 2.0)
    ys = level * h + amp * np.sin(2 * math.pi * freq * xs / w + phase)
    edge = np.stack([xs, ys], 1)
    if top:
        return np.concatenate([[[0, 0], [w, 0]], edge[::-1]])
    return np.concatenate([edge, [[w, h], [0, h]]])


def _ade_stuff(rng, name: str, h: int, w: int) -> np.ndarray:
    if name == 'sky':
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        top, bottom = np.array([35, 85, 200], np.float32), np.array([150, 195, 245], np.float32)
        img = top * (1 - t) + bottom * t + np.zeros((h, w, 3), np.float32)
        clouds = np.clip(draw.smooth_noise(rng, h, w, 7) * 1.6 - 0.8, 0, 1)[..., None]
        return img * (1 - clouds) + 245 * clouds
    if name == 'grass':
        tex = draw.texture(rng, 'grass.png', h, w)[..., None]
        return np.array([50, 150, 35], np.float32) * (0.55 + 0.8 * tex)
    if name == 'road':
        tex = draw.texture(rng, 'gravel.png', h, w)[..., None]
        return np.array([95, 95, 100], np.float32) * (0.6 + 0.7 * tex)
    # wall
    tex = draw.texture(rng, 'brick.png', h, w)[..., None]
    return np.array([175, 95, 70], np.float32) * (0.5 + 0.9 * tex)


def _ade_thing(rng, name: str, h: int, w: int) -> List[np.ndarray]:
    short = min(h, w)
    if name == 'car':
        bw = rng.uniform(0.2, 0.55) * w
        bh = bw / rng.uniform(1.6, 2.4)
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0.2 * h, h - bh)
        body = np.array([[x0, y0 + 0.35 * bh], [x0 + 0.25 * bw, y0 + 0.35 * bh], [x0 + 0.35 * bw, y0],
                         [x0 + 0.72 * bw, y0], [x0 + 0.82 * bw, y0 + 0.35 * bh], [x0 + bw, y0 + 0.35 * bh],
                         [x0 + bw, y0 + 0.85 * bh], [x0, y0 + 0.85 * bh]])
        wr = 0.16 * bw
        wheels = [draw.regular_polygon(x0 + f * bw, min(y0 + 0.85 * bh, h - wr), wr, 16, 0) for f in (0.22, 0.78)]
        return [body] + wheels
    if name == 'person':
        ph = rng.uniform(0.3, 0.8) * h
        pw = ph * rng.uniform(0.28, 0.4)
        cx, top = rng.uniform(pw, w - pw), rng.uniform(0, h - ph)
        head_r = 0.12 * ph
        head = draw.regular_polygon(cx, top + head_r, head_r, 20, 0)
        a = np.linspace(0, 2 * math.pi, 28, endpoint=False)
        body_h = (ph - 2 * head_r) / 2
        body = np.stack([cx + pw / 2 * np.cos(a), top + 2 * head_r + body_h + body_h * np.sin(a)], 1)
        return [body, head]
    r = rng.uniform(0.05, 0.2) * short  # ball
    return [draw.regular_polygon(rng.uniform(r, w - r), rng.uniform(r, h - r), r, 28, rng.uniform(0, 1))]


def _ade_image(rng: np.random.Generator, h: int, w: int):
    # photos only: the grey textures are reserved for the grass / road / wall "stuff" classes
    img = draw.background(rng, h, w, textures=False)
    label = np.zeros((h, w), np.uint8)

    def region(polys: List[np.ndarray]) -> np.ndarray:
        mask = np.zeros((h, w), bool)
        for p in polys:
            mask |= draw.poly_mask(np.round(p, 1), h, w)
        return mask

    def paint(polys: List[np.ndarray], fill: np.ndarray, value: int) -> None:
        mask = region(polys)
        img[mask] = fill[mask]
        label[mask] = value

    if rng.random() < 0.65:
        paint([_band(rng, h, w, rng.uniform(0.15, 0.4), top=True)], _ade_stuff(rng, 'sky', h, w),
              TOY_ADE_LABELS['sky'])
    if rng.random() < 0.75:
        ground = 'grass' if rng.random() < 0.5 else 'road'
        paint([_band(rng, h, w, rng.uniform(0.6, 0.85), top=False)], _ade_stuff(rng, ground, h, w),
              TOY_ADE_LABELS[ground])
    if rng.random() < 0.45:
        ww, wh = rng.uniform(0.25, 0.6) * w, rng.uniform(0.25, 0.55) * h
        x0, y0 = rng.uniform(0, w - ww), rng.uniform(0.1 * h, h - wh)
        rect = np.array([[x0, y0], [x0 + ww, y0], [x0 + ww, y0 + wh], [x0, y0 + wh]])
        paint([rect], _ade_stuff(rng, 'wall', h, w), TOY_ADE_LABELS['wall'])
    for _ in range(int(rng.integers(1, 5))):
        name = ('car', 'person', 'ball')[int(rng.integers(3))]
        mask = region(_ade_thing(rng, name, h, w))
        draw.paint_colour(rng, img, mask, _ADE_THING_COLOURS[name])
        label[mask] = TOY_ADE_LABELS[name]
    return img, label


def make_toy_ade20k(root='data/toy_ade20k', num_train: int = 160, num_val: int = 40,
                    image_size=(256, 320), seed: int = 0) -> Dict[str, str]:
    """Write (or reuse) the toy ADE20K-layout semantic-segmentation set under ``root``.

    Label PNGs hold 0 ("other", ignored after ``reduce_zero_label``) and the ADE20K indices in
    :data:`TOY_ADE_LABELS` (sky, grass, road, wall, person, car, ball). Returns a dict with
    ``root``, ``train_img_dir``, ``val_img_dir``, ``train_ann_dir``, ``val_ann_dir``.
    Use mmseg's ``ADE20KDataset`` with ``data_root=root`` and the stock ``data_prefix``.
    """
    h, w = draw.check_size(image_size)
    root = Path(root).absolute()
    params = dict(generator='toy_ade20k', version=_VERSION, num_train=int(num_train), num_val=int(num_val),
                  image_size=[h, w], seed=int(seed), sources=draw.available([n for n, _ in draw.BACKGROUND_SOURCES]))
    splits = [('training', 'train', int(num_train), 0), ('validation', 'val', int(num_val), 1)]
    paths = dict(root=str(root))
    expected = []
    for split, short, count, _ in splits:
        key = 'train' if short == 'train' else 'val'
        paths[f'{key}_img_dir'] = str(root / 'images' / split)
        paths[f'{key}_ann_dir'] = str(root / 'annotations' / split)
        for i in range(count):
            expected += [root / 'images' / split / f'ADE_{short}_{i + 1:08d}.jpg',
                         root / 'annotations' / split / f'ADE_{short}_{i + 1:08d}.png']
    stamp = root / '.toy_ade20k_stamp.json'
    if draw.stamp_ok(stamp, params, expected):
        return paths

    if stamp.exists():
        stamp.unlink()
    for split, short, count, split_code in splits:
        img_dir, ann_dir = root / 'images' / split, root / 'annotations' / split
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        draw.clear(img_dir, f'ADE_{short}_*.jpg')
        draw.clear(ann_dir, f'ADE_{short}_*.png')
        for i in range(count):
            img, label = _ade_image(draw.image_rng(seed, 10 + split_code, i), h, w)
            stem = f'ADE_{short}_{i + 1:08d}'
            draw.write_jpeg(img, img_dir / f'{stem}.jpg')
            Image.fromarray(label, 'L').save(ann_dir / f'{stem}.png', format='PNG', optimize=False)
    stamp.write_text(json.dumps(params, sort_keys=True))
    return paths
