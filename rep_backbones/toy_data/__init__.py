"""Deterministic toy datasets, generated locally (no download): the tests, the CPU demo, the toy
configs and the deploy tools' calibration data use them.

* :func:`make_toy_coco` -- mmdet's ``CocoDataset`` layout, four coloured shape classes with exact masks;
* :func:`make_toy_ade20k` -- mmseg's ``ADE20KDataset`` layout, a few real ADE20K label values.

Command line (works from a wheel install): ``python -m rep_backbones.toy_data coco|ade20k --help``;
``detection/prepare_toy_coco.py`` and ``segmentation/prepare_toy_ade20k.py`` call the same code.
Only numpy, Pillow and pycocotools are imported; nothing from OpenMMLab.
"""
from .ade20k import TOY_ADE_LABELS, make_toy_ade20k
from .coco import TOY_COCO_CLASSES, TOY_COCO_PALETTE, make_toy_coco, toy_coco_metainfo

__all__ = ['make_toy_coco', 'toy_coco_metainfo', 'TOY_COCO_CLASSES', 'TOY_COCO_PALETTE',
           'make_toy_ade20k', 'TOY_ADE_LABELS']
