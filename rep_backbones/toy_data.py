"""Deterministic generators of small synthetic datasets (no download needed).

* :func:`make_toy_coco` writes a COCO-format instance-segmentation set in mmdet's default
  ``CocoDataset`` layout (``annotations/instances_{train,val}2017.json``, ``{train,val}2017/*.jpg``):
  four shape categories with strong, distinct colours, polygon masks, varied scale.
* :func:`make_toy_ade20k` writes an ADE20K-layout semantic-segmentation set
  (``images/{training,validation}/*.jpg``, ``annotations/{training,validation}/*.png``) whose
  label PNGs use a handful of the real ADE20K class indices (0 = "other", ignored with
  ``reduce_zero_label=True``), so mmseg's 150-class ``ADE20KDataset`` metadata stays valid.

Backgrounds are random crops of the public-domain / CC0 photographs and textures bundled in the
scikit-image wheel (read directly from ``skimage/data``; nothing is fetched), with generated noise
as a fallback. Same parameters -> byte-identical files; a stamp file makes repeated calls no-ops.

Only numpy, Pillow and pycocotools are used; nothing from OpenMMLab is imported.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['make_toy_coco', 'make_toy_ade20k', 'toy_coco_metainfo', 'TOY_COCO_CLASSES', 'TOY_COCO_PALETTE',
           'TOY_ADE_LABELS', 'BACKGROUND_SOURCES', 'TEXTURE_SOURCES']

_VERSION = 2
_JPEG_QUALITY = 92

# ---------------------------------------------------------------------------------------------
# metadata
# ---------------------------------------------------------------------------------------------
TOY_COCO_CLASSES = ('circle', 'square', 'triangle', 'star')
#: drawing colours (RGB), also a sensible visualisation palette for the configs' metainfo
TOY_COCO_PALETTE = [(225, 30, 40), (30, 80, 235), (25, 185, 60), (250, 205, 20)]

#: ADE20K label values (1-based indices into mmseg's ``ADE20KDataset.METAINFO['classes']``)
TOY_ADE_LABELS = {'wall': 1, 'sky': 3, 'road': 7, 'grass': 10, 'person': 13, 'car': 21, 'ball': 120}

#: (file in skimage/data, licence) -- colour photographs used as backgrounds
BACKGROUND_SOURCES = (
    ('astronaut.png', 'public domain (NASA)'),
    ('coffee.png', 'CC0 (Rachel Michetti)'),
    ('chelsea.png', 'CC0 (Stefan van der Walt)'),
    ('rocket.jpg', 'public domain (SpaceX)'),
    ('brick.png', 'CC0 (CC0Textures)'),
    ('grass.png', 'CC0 (linolafett, DeviantArt)'),
    ('gravel.png', 'CC0 (CC0Textures)'),
)
#: grey-level textures used for tinted backgrounds and the ADE "stuff" classes
TEXTURE_SOURCES = ('brick.png', 'grass.png', 'gravel.png')


def toy_coco_metainfo() -> dict:
    """``metainfo`` for mmdet's ``CocoDataset`` on the toy set."""
    return dict(classes=TOY_COCO_CLASSES, palette=[tuple(c) for c in TOY_COCO_PALETTE])


# ---------------------------------------------------------------------------------------------
# image sources
# ---------------------------------------------------------------------------------------------
def _skimage_data_dir() -> Optional[Path]:
    try:
        spec = importlib.util.find_spec('skimage')  # locates the package without importing it
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / 'data'
    return path if path.is_dir() else None


@functools.lru_cache(maxsize=None)
def _load_source(name: str) -> Optional[np.ndarray]:
    """float32 HxWx3 (0..255) of a bundled skimage image, or None if it is not in the wheel."""
    data_dir = _skimage_data_dir()
    if data_dir is None or not (data_dir / name).is_file():
        return None
    try:
        with Image.open(data_dir / name) as im:
            arr = np.asarray(im.convert('RGB'), dtype=np.float32)
    except OSError:
        return None
    arr.setflags(write=False)
    return arr


def _available(names: Sequence[str]) -> List[str]:
    return [n for n in names if _load_source(n) is not None]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int = 6) -> np.ndarray:
    """Low-frequency noise in [0, 1], HxW float32 (bilinear upsampling of a coarse grid)."""
    coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
    up = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
    return np.asarray(up, dtype=np.float32) / 255.0


def _crop_resize(rng: np.random.Generator, src: np.ndarray, h: int, w: int, min_frac: float = 0.35) -> np.ndarray:
    sh, sw = src.shape[:2]
    aspect = w / h
    frac = rng.uniform(min_frac, 1.0)
    ch = int(min(sh, sw / aspect) * frac)
    cw = int(ch * aspect)
    ch, cw = max(ch, 8), max(cw, 8)
    y0 = int(rng.integers(0, max(sh - ch, 0) + 1))
    x0 = int(rng.integers(0, max(sw - cw, 0) + 1))
    crop = np.ascontiguousarray(src[y0:y0 + ch, x0:x0 + cw]).astype(np.uint8)
    out = np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR), dtype=np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def _background(rng: np.random.Generator, h: int, w: int, textures: bool = True) -> np.ndarray:
    """A muted real-photo/texture background (float32 HxWx3), or generated noise as fallback."""
    names = _available([n for n, _ in BACKGROUND_SOURCES if textures or n not in TEXTURE_SOURCES])
    if names:
        name = names[int(rng.integers(len(names)))]
        img = _crop_resize(rng, _load_source(name), h, w)
        if name in TEXTURE_SOURCES:  # grey texture: give it a random muted tint
            tint = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
            img = img * tint
    else:
        base = rng.uniform(60, 190, size=3).astype(np.float32)
        img = base * (0.6 + 0.8 * _smooth_noise(rng, h, w, 5)[..., None])
        img = img + rng.normal(0, 12, size=(h, w, 3)).astype(np.float32)
    # partial desaturation and reduced contrast so the coloured objects stay the salient thing
    grey = img.mean(axis=2, keepdims=True)
    img = 0.5 * img + 0.5 * grey
    img = 0.75 * img + 0.25 * float(img.mean())
    return img


def _texture(rng: np.random.Generator, name: str, h: int, w: int) -> np.ndarray:
    """Grey texture in [0, 1] (HxW float32), from skimage if available, else noise."""
    src = _load_source(name)
    if src is None:
        return np.clip(0.5 * _smooth_noise(rng, h, w, 12) + rng.random((h, w)).astype(np.float32) * 0.5, 0, 1)
    return _crop_resize(rng, src, h, w, min_frac=0.25)[..., 0] / 255.0


# ---------------------------------------------------------------------------------------------
# drawing helpers
# ---------------------------------------------------------------------------------------------
def _poly_mask(poly: np.ndarray, h: int, w: int, margin: int = 0) -> np.ndarray:
    im = Image.new('L', (w, h), 0)
    draw = ImageDraw.Draw(im)
    pts = [tuple(p) for p in poly.tolist()]
    draw.polygon(pts, fill=1)
    if margin:
        draw.line(pts + [pts[0]], fill=1, width=2 * margin + 1)
    return np.asarray(im, dtype=bool)


def _paint_colour(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, colour: Sequence[float],
                  jitter: float = 22.0, noise: float = 6.0) -> None:
    """Paint ``mask`` in ``img`` with ``colour`` plus per-instance jitter, a linear shading gradient
    and pixel noise (computed over the mask's bounding box only)."""
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(ys):
        return
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    bh, bw = y1 - y0, x1 - x0
    base = np.clip(np.asarray(colour, np.float32) + rng.uniform(-jitter, jitter, size=3).astype(np.float32), 0, 255)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (np.float32(math.cos(theta)) * np.arange(bw, dtype=np.float32)[None, :]
            + np.float32(math.sin(theta)) * np.arange(bh, dtype=np.float32)[:, None]) / max(bh, bw, 1)
    shade = 1.0 + np.float32(rng.uniform(0.1, 0.3)) * (ramp - ramp.mean())
    fill = base[None, None, :] * shade[..., None]
    fill += rng.standard_normal(size=(bh, bw, 3), dtype=np.float32) * np.float32(noise)
    sub = mask[y0:y1, x0:x1]
    img[y0:y1, x0:x1][sub] = fill[sub]


def _regular(cx: float, cy: float, r: float, n: int, rot: float) -> np.ndarray:
    a = rot + np.arange(n) * 2 * math.pi / n
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)


def _shape_polygon(rng: np.random.Generator, cat: int, size: float) -> np.ndarray:
    """Polygon (Nx2, x/y) centred on the origin; ``size`` is the approximate diameter."""
    r = size / 2
    rot = rng.uniform(0, 2 * math.pi)
    if cat == 0:  # circle
        return _regular(0, 0, r, int(np.clip(r * 0.8, 12, 48)), rot)
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
    # five-pointed star
    outer = _regular(0, 0, r, 5, rot)
    inner = _regular(0, 0, r * 0.45, 5, rot + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _write_jpeg(arr: np.ndarray, path: Path) -> None:
    img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), 'RGB')
    img.save(path, format='JPEG', quality=_JPEG_QUALITY, subsampling=0, optimize=False)


def _rng(seed: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), split, index])


# ---------------------------------------------------------------------------------------------
# stamp handling
# ---------------------------------------------------------------------------------------------
def _stamp_ok(stamp: Path, params: dict, expected: Sequence[Path]) -> bool:
    try:
        if json.loads(stamp.read_text()) != params:
            return False
    except (OSError, ValueError):
        return False
    return all(p.is_file() for p in expected)


def _clear(directory: Path, pattern: str) -> None:
    """Remove files a previous run of this generator wrote (only its own naming pattern)."""
    for p in directory.glob(pattern):
        if p.is_file():
            p.unlink()


def _check_size(image_size) -> Tuple[int, int]:
    h, w = (int(image_size), int(image_size)) if np.isscalar(image_size) else (int(image_size[0]), int(image_size[1]))
    if h < 64 or w < 64:
        raise ValueError(f'image_size must be at least 64x64, got {(h, w)}')
    return h, w


# ---------------------------------------------------------------------------------------------
# toy COCO
# ---------------------------------------------------------------------------------------------
def _coco_image(rng: np.random.Generator, h: int, w: int, max_objects: int):
    img = _background(rng, h, w)
    occupied = np.zeros((h, w), bool)
    short = min(h, w)
    min_size, max_size = max(12.0, 0.06 * short), 0.85 * short
    objects = []
    n = int(rng.integers(1, max_objects + 1))
    for k in range(n):
        cat = int(rng.integers(len(TOY_COCO_CLASSES)))
        # log-uniform scale; the first object of an image is biased towards large sizes
        lo = math.log(min_size) if k else math.log(0.3 * short)
        size = math.exp(rng.uniform(lo, math.log(max_size)))
        for _attempt in range(25):
            poly = _shape_polygon(rng, cat, size)
            (x0, y0), (x1, y1) = poly.min(0), poly.max(0)
            if x1 - x0 > w - 4 or y1 - y0 > h - 4:
                size *= 0.8
                continue
            cx = rng.uniform(2 - x0, w - 2 - x1)
            cy = rng.uniform(2 - y0, h - 2 - y1)
            cand = np.round(poly + [cx, cy], 1)
            mask = _poly_mask(cand, h, w)
            # bounding boxes may overlap, the shapes themselves (plus a 2 px margin) may not:
            # masks stay exact (fully visible) polygons
            if mask.sum() < 16 or (mask & occupied).any():
                size *= 0.9
                continue
            occupied |= _poly_mask(cand, h, w, margin=2)
            _paint_colour(rng, img, mask, TOY_COCO_PALETTE[cat])
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


def make_toy_coco(root='data/toy_coco', num_train: int = 160, num_val: int = 40,
                  image_size=(256, 320), seed: int = 0, max_objects: int = 5) -> Dict[str, str]:
    """Write (or reuse) the toy COCO instance-segmentation set under ``root``.

    Returns a dict with ``root``, ``train_ann``, ``val_ann``, ``train_img_dir``, ``val_img_dir``
    (absolute paths as strings). For mmdet, use the stock ``coco_instance.py`` base config with
    ``data_root=root`` and ``metainfo=toy_coco_metainfo()``.
    """
    h, w = _check_size(image_size)
    root = Path(root).absolute()
    params = dict(generator='toy_coco', version=_VERSION, num_train=int(num_train), num_val=int(num_val),
                  image_size=[h, w], seed=int(seed), max_objects=int(max_objects),
                  sources=_available([n for n, _ in BACKGROUND_SOURCES]))
    splits = [('train2017', int(num_train), 0), ('val2017', int(num_val), 1)]
    paths = dict(root=str(root), train_ann=str(root / 'annotations' / 'instances_train2017.json'),
                 val_ann=str(root / 'annotations' / 'instances_val2017.json'),
                 train_img_dir=str(root / 'train2017'), val_img_dir=str(root / 'val2017'))
    expected = [Path(paths['train_ann']), Path(paths['val_ann'])]
    expected += [root / name / f'{i + 1:012d}.jpg' for name, count, _ in splits for i in range(count)]
    stamp = root / '.toy_coco_stamp.json'
    if _stamp_ok(stamp, params, expected):
        return paths

    if stamp.exists():
        stamp.unlink()
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    categories = [dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(TOY_COCO_CLASSES)]
    for name, count, split_code in splits:
        img_dir = root / name
        img_dir.mkdir(parents=True, exist_ok=True)
        _clear(img_dir, '0' * 6 + '*.jpg')
        images, annotations = [], []
        for i in range(count):
            image_id = i + 1
            img, objects = _coco_image(_rng(seed, split_code, i), h, w, max_objects)
            file_name = f'{image_id:012d}.jpg'
            _write_jpeg(img, img_dir / file_name)
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


# ---------------------------------------------------------------------------------------------
# toy ADE20K
# ---------------------------------------------------------------------------------------------
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
        clouds = np.clip(_smooth_noise(rng, h, w, 7) * 1.6 - 0.8, 0, 1)[..., None]
        return img * (1 - clouds) + 245 * clouds
    if name == 'grass':
        tex = _texture(rng, 'grass.png', h, w)[..., None]
        return np.array([50, 150, 35], np.float32) * (0.55 + 0.8 * tex)
    if name == 'road':
        tex = _texture(rng, 'gravel.png', h, w)[..., None]
        return np.array([95, 95, 100], np.float32) * (0.6 + 0.7 * tex)
    # wall
    tex = _texture(rng, 'brick.png', h, w)[..., None]
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
        wheels = [_regular(x0 + f * bw, min(y0 + 0.85 * bh, h - wr), wr, 16, 0) for f in (0.22, 0.78)]
        return [body] + wheels
    if name == 'person':
        ph = rng.uniform(0.3, 0.8) * h
        pw = ph * rng.uniform(0.28, 0.4)
        cx, top = rng.uniform(pw, w - pw), rng.uniform(0, h - ph)
        head_r = 0.12 * ph
        head = _regular(cx, top + head_r, head_r, 20, 0)
        a = np.linspace(0, 2 * math.pi, 28, endpoint=False)
        body_h = (ph - 2 * head_r) / 2
        body = np.stack([cx + pw / 2 * np.cos(a), top + 2 * head_r + body_h + body_h * np.sin(a)], 1)
        return [body, head]
    r = rng.uniform(0.05, 0.2) * short  # ball
    return [_regular(rng.uniform(r, w - r), rng.uniform(r, h - r), r, 28, rng.uniform(0, 1))]


def _ade_image(rng: np.random.Generator, h: int, w: int):
    # photos only: the grey textures are reserved for the grass / road / wall "stuff" classes
    img = _background(rng, h, w, textures=False)
    label = np.zeros((h, w), np.uint8)

    def region(polys: List[np.ndarray]) -> np.ndarray:
        mask = np.zeros((h, w), bool)
        for p in polys:
            mask |= _poly_mask(np.round(p, 1), h, w)
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
        _paint_colour(rng, img, mask, _ADE_THING_COLOURS[name])
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
    h, w = _check_size(image_size)
    root = Path(root).absolute()
    params = dict(generator='toy_ade20k', version=_VERSION, num_train=int(num_train), num_val=int(num_val),
                  image_size=[h, w], seed=int(seed), sources=_available([n for n, _ in BACKGROUND_SOURCES]))
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
    if _stamp_ok(stamp, params, expected):
        return paths

    if stamp.exists():
        stamp.unlink()
    for split, short, count, split_code in splits:
        img_dir, ann_dir = root / 'images' / split, root / 'annotations' / split
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        _clear(img_dir, f'ADE_{short}_*.jpg')
        _clear(ann_dir, f'ADE_{short}_*.png')
        for i in range(count):
            img, label = _ade_image(_rng(seed, 10 + split_code, i), h, w)
            stem = f'ADE_{short}_{i + 1:08d}'
            _write_jpeg(img, img_dir / f'{stem}.jpg')
            Image.fromarray(label, 'L').save(ann_dir / f'{stem}.png', format='PNG', optimize=False)
    stamp.write_text(json.dumps(params, sort_keys=True))
    return paths
