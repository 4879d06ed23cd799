"""Drawing code shared by the toy dataset generators (:mod:`.coco`, :mod:`.ade20k`): photo / texture
backgrounds, polygons, painted regions, JPEG writing and the stamp file that makes a generator
idempotent.

Backgrounds are random crops of the public-domain / CC0 photographs and textures bundled in the
scikit-image wheel (read directly from ``skimage/data``; nothing is fetched), with generated noise
as a fallback. Only numpy and Pillow are imported (scikit-image is only located, never imported).
Every function takes an explicit ``numpy.random.Generator``: same seed -> same pixels.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

JPEG_QUALITY = 92

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


# -- image sources ---------------------------------------------------------------------------------
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
def load_source(name: str) -> Optional[np.ndarray]:
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


def available(names: Sequence[str]) -> List[str]:
    """The names in ``names`` whose image is bundled (recorded in the stamps: they change the output)."""
    return [n for n in names if load_source(n) is not None]


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int = 6) -> np.ndarray:
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


def background(rng: np.random.Generator, h: int, w: int, textures: bool = True) -> np.ndarray:
    """A muted real-photo/texture background (float32 HxWx3), or generated noise as fallback.

    Desaturated and lower in contrast so that painted objects stay the salient thing."""
    names = available([n for n, _ in BACKGROUND_SOURCES if textures or n not in TEXTURE_SOURCES])
    if names:
        name = names[int(rng.integers(len(names)))]
        img = _crop_resize(rng, load_source(name), h, w)
        if name in TEXTURE_SOURCES:  # grey texture: give it a random muted tint
            img = img * rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    else:
        base = rng.uniform(60, 190, size=3).astype(np.float32)
        img = base * (0.6 + 0.8 * smooth_noise(rng, h, w, 5)[..., None])
        img = img + rng.normal(0, 12, size=(h, w, 3)).astype(np.float32)
    grey = img.mean(axis=2, keepdims=True)
    img = 0.5 * img + 0.5 * grey
    return 0.75 * img + 0.25 * float(img.mean())


def texture(rng: np.random.Generator, name: str, h: int, w: int) -> np.ndarray:
    """Grey texture in [0, 1] (HxW float32), from skimage if available, else noise."""
    src = load_source(name)
    if src is None:
        return np.clip(0.5 * smooth_noise(rng, h, w, 12) + rng.random((h, w)).astype(np.float32) * 0.5, 0, 1)
    return _crop_resize(rng, src, h, w, min_frac=0.25)[..., 0] / 255.0


# -- shapes and painting ---------------------------------------------------------------------------
def poly_mask(poly: np.ndarray, h: int, w: int, margin: int = 0) -> np.ndarray:
    """HxW bool mask of polygon ``poly`` (Nx2, x/y), grown by ``margin`` pixels when given."""
    im = Image.new('L', (w, h), 0)
    draw = ImageDraw.Draw(im)
    pts = [tuple(p) for p in poly.tolist()]
    draw.polygon(pts, fill=1)
    if margin:
        draw.line(pts + [pts[0]], fill=1, width=2 * margin + 1)
    return np.asarray(im, dtype=bool)


def paint_colour(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, colour: Sequence[float],
                 jitter: float = 22.0, noise: float = 6.0) -> None:
    """Paint ``mask`` in ``img`` (in place) with ``colour`` plus per-instance jitter, a linear shading
    gradient and pixel noise (computed over the mask's bounding box only)."""
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


def regular_polygon(cx: float, cy: float, r: float, n: int, rot: float) -> np.ndarray:
    """``n`` vertices (Nx2, x/y) on a circle of radius ``r`` around (cx, cy), rotated by ``rot``."""
    a = rot + np.arange(n) * 2 * math.pi / n
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)


# -- files -----------------------------------------------------------------------------------------
def write_jpeg(arr: np.ndarray, path: Path) -> None:
    """Save a float HxWx3 image (0..255) as a baseline JPEG (fixed settings: byte-identical reruns)."""
    img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), 'RGB')
    img.save(path, format='JPEG', quality=JPEG_QUALITY, subsampling=0, optimize=False)


def image_rng(seed: int, split: int, index: int) -> np.random.Generator:
    """The generator of one image: image ``index`` does not depend on how many images are made."""
    return np.random.default_rng([int(seed), split, index])


def stamp_ok(stamp: Path, params: dict, expected: Sequence[Path]) -> bool:
    """True when ``stamp`` records ``params`` and every ``expected`` file exists (nothing to do)."""
    try:
        if json.loads(stamp.read_text()) != params:
            return False
    except (OSError, ValueError):
        return False
    return all(p.is_file() for p in expected)


def clear(directory: Path, pattern: str) -> None:
    """Remove files a previous run of a generator wrote (only its own naming pattern)."""
    for p in directory.glob(pattern):
        if p.is_file():
            p.unlink()


def check_size(image_size) -> Tuple[int, int]:
    """``(H, W)`` from an int or a pair; at least 64x64 (the backbones' stride-32 maps need it)."""
    h, w = (int(image_size), int(image_size)) if np.isscalar(image_size) else (int(image_size[0]), int(image_size[1]))
    if h < 64 or w < 64:
        raise ValueError(f'image_size must be at least 64x64, got {(h, w)}')
    return h, w
