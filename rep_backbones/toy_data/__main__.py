"""``python -m rep_backbones.toy_data coco|ade20k [options]``: write a toy dataset.

    python -m rep_backbones.toy_data coco                     # -> data/toy_coco (the main job's set)
    python -m rep_backbones.toy_data coco --num-train 400 --size 320 384 --max-objects 6 --object-size 0.05 0.8
    python -m rep_backbones.toy_data ade20k                   # -> data/toy_ade20k

Deterministic (same arguments -> identical files) and idempotent (a stamp file makes reruns no-ops).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

from . import TOY_ADE_LABELS, TOY_COCO_CLASSES, make_toy_ade20k, make_toy_coco


def _common(parser: argparse.ArgumentParser, root: str, size: Sequence[int]) -> None:
    parser.add_argument('--root', default=root, help=f'output directory (default: {root})')
    parser.add_argument('--num-train', type=int, default=160, help='training images (default: 160)')
    parser.add_argument('--num-val', type=int, default=40, help='validation images (default: 40)')
    parser.add_argument('--size', type=int, nargs=2, default=tuple(size), metavar=('H', 'W'),
                        help=f'image height and width (default: {size[0]} {size[1]})')
    parser.add_argument('--seed', type=int, default=0)


def coco_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description='Generate the toy COCO instance-segmentation set '
                                     "(mmdet's CocoDataset layout: annotations/instances_{train,val}2017.json, "
                                     '{train,val}2017/*.jpg).')
    _common(parser, 'data/toy_coco', (160, 192))
    parser.add_argument('--max-objects', type=int, default=3, help='max objects per image (default: 3)')
    parser.add_argument('--object-size', type=float, nargs=2, default=(0.25, 0.65), metavar=('MIN', 'MAX'),
                        help='object diameter range as fractions of the short side (default: 0.25 0.65)')
    return parser


def ade20k_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description='Generate the toy ADE20K-layout semantic-segmentation set '
                                     "(mmseg's ADE20KDataset layout: images/ and annotations/ "
                                     '{training,validation}; ADE20K label values, 0 = other/ignored).')
    _common(parser, 'data/toy_ade20k', (256, 320))
    return parser


def main_coco(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> dict:
    args = coco_parser(prog).parse_args(argv)
    start = time.time()
    paths = make_toy_coco(args.root, num_train=args.num_train, num_val=args.num_val, image_size=tuple(args.size),
                          seed=args.seed, max_objects=args.max_objects, object_size=tuple(args.object_size))
    print(f'toy COCO ({", ".join(TOY_COCO_CLASSES)}) ready in {paths["root"]} ({time.time() - start:.1f} s)')
    for key in ('train_ann', 'val_ann', 'train_img_dir', 'val_img_dir'):
        print(f'  {key}: {paths[key]}')
    return paths


def main_ade20k(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> dict:
    args = ade20k_parser(prog).parse_args(argv)
    start = time.time()
    paths = make_toy_ade20k(args.root, num_train=args.num_train, num_val=args.num_val,
                            image_size=tuple(args.size), seed=args.seed)
    labels = ', '.join(f'{name}={value}' for name, value in TOY_ADE_LABELS.items())
    print(f'toy ADE20K ready in {paths["root"]} ({time.time() - start:.1f} s); label values: {labels}')
    for key in ('train_img_dir', 'train_ann_dir', 'val_img_dir', 'val_ann_dir'):
        print(f'  {key}: {paths[key]}')
    return paths


COMMANDS = {'coco': main_coco, 'ade20k': main_ade20k}


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The dataset name picks the command, which parses the rest (so ``ade20k --help`` lists ade20k's options)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        COMMANDS[argv[0]](argv[1:], prog=f'python -m rep_backbones.toy_data {argv[0]}')
        return
    parser = argparse.ArgumentParser(prog='python -m rep_backbones.toy_data', description=__doc__.splitlines()[0])
    parser.add_argument('dataset', choices=sorted(COMMANDS))
    parser.parse_args(argv)        # help, or the error that names the choices


if __name__ == '__main__':
    main()
