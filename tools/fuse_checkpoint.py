"""Turn a training checkpoint into a fused (deploy-form) checkpoint for the deploy config.

    python tools/fuse_checkpoint.py CONFIG TRAINED.pth FUSED.pth

Builds the model of CONFIG, loads TRAINED.pth (EMA weights included, as mmengine saves them),
fuses every re-parameterizable backbone with ``rep_backbones.fuse`` and writes
``{'meta': ..., 'state_dict': fused}``. The file is then checked by loading it, strictly, into the
same config built with ``backbone.deploy=True`` (what ``configs/deploy/*_deploy.py`` do).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from rep_backbones import fuse_with_report  # noqa: E402
from rep_backbones.checkpoint import read_checkpoint  # noqa: E402
from rep_backbones.mm.build import build_model_from_config  # noqa: E402


def fuse_checkpoint(config: str, src: str, dst: str, cfg_options=None) -> str:
    model = build_model_from_config(config, src, cfg_options=cfg_options)
    report = fuse_with_report(model)
    meta = read_checkpoint(src).get('meta', {})
    meta = dict(meta, fused_from=os.path.abspath(src))
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({'meta': meta, 'state_dict': model.state_dict()}, dst)
    deploy = build_model_from_config(config, None, cfg_options={**(cfg_options or {}), 'model.backbone.deploy': True})
    deploy.load_state_dict(read_checkpoint(dst)['state_dict'], strict=True)
    return report.summary()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    summary = fuse_checkpoint(args.config, args.checkpoint, args.out, args.cfg_options)
    print(f'{summary}\nwrote {args.out} (loads strictly into the deploy form of {args.config})')


if __name__ == '__main__':
    main()
