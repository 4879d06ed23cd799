"""Images for calibration and evaluation, as the model's own pipeline and data preprocessor make them.

Calibration images come from a folder (``--calib-dir``) or from the config's training set; every image goes
through the config's test pipeline (resize, padding) and the model's ``data_preprocessor`` (mean / std,
channel order), so the calibrated ranges are those the deployed network sees.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from rep_backbones.io.atomic import PathLike

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')
#: ImageNet normalisation (RGB, 0..255), what every backbone family here was trained with
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class CalibrationDataError(ValueError):
    """The calibration folder is missing or holds no images."""


def list_images(folder: PathLike) -> List[Path]:
    """Image files directly in ``folder``, sorted by name; :class:`CalibrationDataError` when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationDataError(f'calibration folder {folder} does not exist (or is not a folder)')
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise CalibrationDataError(f'calibration folder {folder} holds no images ({", ".join(IMAGE_SUFFIXES)})')
    return files


def task_scope(model: nn.Module) -> str:
    """``'mmseg'`` for a segmentor (a ``decode_head``), else ``'mmdet'``."""
    return 'mmseg' if hasattr(model, 'decode_head') else 'mmdet'


def _build_dataset(model: nn.Module, split: str, pipeline: Optional[list] = None):
    from mmengine.registry import DefaultScope
    scope = task_scope(model)
    cfg = model.cfg.get(f'{split}_dataloader').dataset.copy()
    if pipeline is not None:
        cfg['pipeline'] = pipeline
    with DefaultScope.overwrite_default_scope(scope):
        return importlib.import_module(f'{scope}.registry').DATASETS.build(cfg)


def deploy_pipeline(model: nn.Module):
    """The config's test pipeline as a callable ``dict(img_path=...) -> packed inputs``, without loading
    annotations: what turns one image file into the model's input at deployment."""
    from mmcv.transforms import Compose
    from mmengine.registry import DefaultScope
    steps = [t for t in model.cfg.test_dataloader.dataset.pipeline if 'Annotation' not in t['type']]
    with DefaultScope.overwrite_default_scope(task_scope(model)):
        return Compose(steps)


def evaluation_set(model: nn.Module, limit: Optional[int] = None, split: str = 'test'):
    """``(dataset, batches)``: the config's ``{split}`` dataset and its first ``limit`` images (all when
    ``None``), each a batch of one as the dataset's pipeline packs it (``inputs``: uint8 ``3 x H x W``;
    ``data_samples`` with the ground truth), before the data preprocessor: every form preprocesses on its own
    clock."""
    from mmengine.dataset import pseudo_collate
    dataset = _build_dataset(model, split)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    return dataset, [pseudo_collate([dataset[i]]) for i in range(n)]


def dataset_image_files(model: nn.Module, split: str = 'train') -> List[Path]:
    """The image files of the config's ``{split}_dataloader`` dataset."""
    dataset = _build_dataset(model, split, pipeline=[])
    return [Path(dataset.get_data_info(i)['img_path']) for i in range(len(dataset))]


def calibration_inputs(model: nn.Module, files: Sequence[PathLike]) -> List[np.ndarray]:
    """One normalised float32 ``1 x 3 x H x W`` array per image file, through :func:`deploy_pipeline` and the
    model's ``data_preprocessor``."""
    from mmengine.dataset import pseudo_collate
    if not files:
        raise CalibrationDataError('no calibration images: static quantization needs at least one')
    pipeline = deploy_pipeline(model)
    out = []
    with torch.no_grad():
        for f in files:
            data = model.data_preprocessor(pseudo_collate([pipeline(dict(img_path=str(f), img_id=0))]), False)
            out.append(data['inputs'].float().numpy())
    return out


# -- fixed-size inputs (bare backbones, tools/quantize_onnx.py --shape) ------------------------------------
def toy_image_folders(root: PathLike, n_train: int, n_val: int, image_size: Tuple[int, int]) -> Tuple[Path, Path]:
    """``(train, val)`` image folders of a toy COCO set generated under ``root`` (reused when it is
    there with the same settings; calibration reads train, the parity report val)."""
    from rep_backbones.toy_data import make_toy_coco
    paths = make_toy_coco(root, num_train=max(int(n_train), 1), num_val=max(int(n_val), 1),
                          image_size=tuple(max(64, int(s)) for s in image_size))
    return Path(paths['train_img_dir']), Path(paths['val_img_dir'])


def read_image(path: PathLike, shape: Tuple[int, int]) -> np.ndarray:
    """``H x W x 3`` uint8 RGB, resized (bilinear) to ``shape = (H, W)``."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert('RGB').resize((shape[1], shape[0]), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def imagenet_preprocess(images: Sequence[np.ndarray]) -> torch.Tensor:
    """RGB uint8 ``H x W x 3`` images -> normalised float ``N x 3 x H x W`` (bare backbones)."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def mm_preprocess(model: nn.Module) -> Callable[[Sequence[np.ndarray]], torch.Tensor]:
    """The model's own ``data_preprocessor`` (mean/std, channel order, padding) as a function of
    RGB uint8 images; it is given BGR ``3 x H x W`` tensors, as mmcv's ``LoadImageFromFile`` makes."""
    def run(images: Sequence[np.ndarray]) -> torch.Tensor:
        inputs = [torch.from_numpy(np.ascontiguousarray(img[..., ::-1])).permute(2, 0, 1) for img in images]
        with torch.no_grad():
            return model.data_preprocessor(dict(inputs=inputs), False)['inputs'].float()
    return run


def load_inputs(files: Sequence[PathLike], shape: Tuple[int, int],
                preprocess: Callable[[Sequence[np.ndarray]], torch.Tensor]) -> List[np.ndarray]:
    """One normalised float32 ``1 x 3 x H x W`` array per image file."""
    return [preprocess([read_image(f, shape)]).numpy().astype(np.float32) for f in files]
