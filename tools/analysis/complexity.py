#!/usr/bin/env python
"""Parameters and FLOPs (conv + linear MACs) of a backbone, classifier or whole mm model, in
training form and fused.

    # one backbone / classifier (NAME = a registered name, ARCH = a variant; default: its default)
    python tools/analysis/complexity.py --backbone RepGhostNet:1.0x --shape 224 224
    python tools/analysis/complexity.py --classifier RepGhostNet:1.0x
    # every registered family's classifier table, with the seed's figures beside ours
    python tools/analysis/complexity.py --seed-tables [--family RepGhostNet ...] [--seed-file FILE]
    # a whole detector / segmentor from an mm config: params of backbone / neck / heads, MACs
    python tools/analysis/complexity.py --config configs/retinanet_repghost_1_0x.py --shape 800 1333

Counting follows the seeds (``rep_backbones.analysis``): parameters = all parameters (BN affine
included); MACs = for every Conv2d output element ``C_in/groups * kh * kw``, for every Linear output
element ``in_features``; BN, activations, pooling, additions and biases are not counted. "fused" is
``rep_backbones.fuse`` (every branch and BatchNorm folded). For RepGhostNet the seed counted the
*official* deploy form (RepGhost branches fused, conv+BN pairs kept), shown as "official deploy".
The seed figures live in ``docs/seed_tables.yaml`` (``--seed-file``); a figure such as ``142.39M``
matches (✓) every count that rounds to it, ``4,073,604`` only itself. The counting and the tables
are ``rep_backbones/apis/complexity.py``.

Families are discovered from ``rep_backbones.models.BACKBONES`` / ``CLASSIFIERS`` at run time.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from rep_backbones.apis.build import parse_backbone_spec
from rep_backbones.apis.complexity import (backbone_complexity, classifier_complexity, config_complexity,
                                           format_config, format_model, seed_tables_markdown)
from rep_backbones.apis.seed_tables import load_seed_tables
from rep_backbones.models import BACKBONES, CLASSIFIERS

SEED_FILE = Path(__file__).resolve().parents[2] / 'docs' / 'seed_tables.yaml'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--backbone', metavar='NAME[:ARCH]', help=f'one of: {", ".join(sorted(BACKBONES))}')
    what.add_argument('--classifier', metavar='NAME[:ARCH]', help=f'one of: {", ".join(sorted(CLASSIFIERS))}')
    what.add_argument('--config', help='mmdet / mmseg config file')
    what.add_argument('--seed-tables', action='store_true', help='every family against its seed table')
    parser.add_argument('--shape', type=int, nargs='+', metavar=('H', 'W'),
                        help='input size (default 224, or 800 1333 for --config)')
    parser.add_argument('--checkpoint', help='for --config: a checkpoint to load (params do not need one)')
    parser.add_argument('--family', nargs='+', help='with --seed-tables: only these families')
    parser.add_argument('--variants', nargs='+', help='with --seed-tables: only these variants')
    parser.add_argument('--seed-file', default=str(SEED_FILE),
                        help='published figures for --seed-tables / --classifier (default: docs/seed_tables.yaml)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    if args.seed_tables:
        print(seed_tables_markdown(load_seed_tables(args.seed_file), args.family, args.variants))
    elif args.config:
        print(format_config(config_complexity(args.config, args.shape or (800, 1333), args.checkpoint)))
    elif args.backbone:
        spec = parse_backbone_spec(args.backbone, fill_default=True)
        shape = args.shape or 224
        title = f"backbone {spec['type']} {spec.get('arch', '')}"
        print(format_model(title, backbone_complexity(args.backbone, shape), shape))
    else:
        spec = parse_backbone_spec(args.classifier, CLASSIFIERS, fill_default=True)
        res = classifier_complexity(args.classifier, args.shape, load_seed_tables(args.seed_file))
        title = f"classifier {spec['type']} {spec.get('arch', '')}"
        print(format_model(title, res, args.shape or res['input']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
