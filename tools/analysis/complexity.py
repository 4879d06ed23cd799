#!/usr/bin/env python
"""Parameters and FLOPs (conv + linear MACs) of a backbone, classifier or whole mm model, in
training form and fused, and every family against its paper's published figures.

    # one backbone / classifier (NAME = a registered name, ARCH = a variant; default: its default)
    python tools/analysis/complexity.py --backbone RepGhostNet:1.0x --shape 224 224
    python tools/analysis/complexity.py --classifier RepGhostNet:1.0x
    # every registered family's classifier, the paper's figures beside ours
    python tools/analysis/complexity.py --paper-tables [--family RepGhostNet ...] [--variants 1.0x ...]
    # a whole detector / segmentor from an mm config: params of backbone / neck / heads, MACs
    python tools/analysis/complexity.py --shape 800 1333 \
        --config configs/repghostnet/retinanet_repghostnet-1.0x_fpn_1x_coco.py

Counting and tables: ``rep_backbones/complexity.py`` (its docstring says what is counted); the papers'
figures are each family file's ``PAPER_TABLE``. A figure such as ``142.39M`` matches (✓) every count
that rounds to it, ``4,073,604`` only itself.
"""
from __future__ import annotations

import argparse
import sys

import torch

from rep_backbones.complexity import (
    backbone_complexity,
    classifier_complexity,
    config_complexity,
    format_config,
    format_model,
    paper_tables_markdown,
)
from rep_backbones.io.build import parse_backbone_spec
from rep_backbones.models import BACKBONES, CLASSIFIERS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--backbone', metavar='NAME[:ARCH]', help=f'one of: {", ".join(sorted(BACKBONES))}')
    what.add_argument('--classifier', metavar='NAME[:ARCH]', help=f'one of: {", ".join(sorted(CLASSIFIERS))}')
    what.add_argument('--config', help='mmdet / mmseg config file')
    what.add_argument('--paper-tables', action='store_true', help="every family against its paper's figures")
    parser.add_argument('--shape', type=int, nargs='+', metavar=('H', 'W'),
                        help='input size (default 224, or 800 1333 for --config)')
    parser.add_argument('--checkpoint', help='for --config: a checkpoint to load (params do not need one)')
    parser.add_argument('--family', nargs='+', help='with --paper-tables: only these families')
    parser.add_argument('--variants', nargs='+', help='with --paper-tables: only these variants')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    if args.paper_tables:
        print(paper_tables_markdown(args.family, args.variants))
    elif args.config:
        print(format_config(config_complexity(args.config, args.shape or (800, 1333), args.checkpoint)))
    elif args.backbone:
        spec = parse_backbone_spec(args.backbone, fill_default=True)
        shape = args.shape or 224
        title = f"backbone {spec['type']} {spec.get('arch', '')}"
        print(format_model(title, backbone_complexity(args.backbone, shape), shape))
    else:
        spec = parse_backbone_spec(args.classifier, CLASSIFIERS, fill_default=True)
        res = classifier_complexity(args.classifier, args.shape)
        title = f"classifier {spec['type']} {spec.get('arch', '')}"
        print(format_model(title, res, args.shape or res['input']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
