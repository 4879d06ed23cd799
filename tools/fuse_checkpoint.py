"""Turn a training checkpoint into a fused (deploy-form) checkpoint for the deploy config.

    python tools/fuse_checkpoint.py CONFIG TRAINED.pth FUSED.pth [--whole] [--cfg-options k=v ...]

Builds the model of CONFIG, loads TRAINED.pth (EMA weights included, as mmengine saves them),
fuses every re-parameterizable backbone with ``rep_backbones.fuse`` and writes
``{'meta': ..., 'state_dict': fused}``. The file is checked by loading it, strictly, into the same
config built with ``backbone.deploy=True`` (what ``configs/deploy/*_deploy.py`` do) before it
replaces FUSED.pth (atomically: FUSED.pth is either the old file or the complete checked new one).
See ``rep_backbones/deploy/fused_checkpoint.py``.
"""
import argparse

from mmengine.config import DictAction

from rep_backbones.deploy.fused_checkpoint import fuse_checkpoint


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out')
    parser.add_argument('--whole', action='store_true',
                        help='also fold the conv+BN pairs of necks and heads (test with tools/test.py --whole-fused)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    summary = fuse_checkpoint(args.config, args.checkpoint, args.out, args.cfg_options, args.whole)
    print(f'{summary}\nwrote {args.out} (loads strictly into the deploy form of {args.config})')


if __name__ == '__main__':
    main()
