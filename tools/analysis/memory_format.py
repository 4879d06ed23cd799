#!/usr/bin/env python
"""Which memory format should a family's deploy form keep its weights in? Times the fused backbone with
NCHW weights vs channels-last weights, both fed the usual NCHW input (what a detector gives it),
interleaved rounds in one process; the result is each family's ``deploy_memory_format``.

    python tools/analysis/memory_format.py [--shape 512 512] [--threads 2] [--rounds 9] [NAME:ARCH ...]
"""
import argparse
import copy
import functools

import torch

import rep_backbones
from rep_backbones.deploy.timing import interleaved, summarize
from rep_backbones.io.build import parse_backbone_spec
from rep_backbones.models import build_backbone

DEFAULT = ['RepGhostNet:1.0x', 'RepGhostNetV2:S', 'MobileNetV4:S', 'RepNeXt:M0', 'RepMobile:S']


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('specs', nargs='*', default=DEFAULT)
    parser.add_argument('--shape', type=int, nargs=2, default=(512, 512))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 3, *args.shape)
    print(f'fused backbones, NCHW input 1x3x{args.shape[0]}x{args.shape[1]}, {args.threads} threads, '
          f'median of {args.rounds} interleaved rounds')
    print('| backbone | NCHW weights (ms) | channels-last weights (ms) | ratio | shipped deploy_memory_format |')
    print('|---|---|---|---|---|')
    for spec in args.specs:
        kwargs = parse_backbone_spec(spec)
        fused = rep_backbones.fuse(build_backbone(kwargs.pop('type'), **kwargs).eval())
        formats = (torch.contiguous_format, torch.channels_last)
        forms = {fmt: copy.deepcopy(fused).to(memory_format=fmt) for fmt in formats}
        with torch.inference_mode():
            calls = {fmt: functools.partial(model, x) for fmt, model in forms.items()}
            times = interleaved(calls, args.rounds, iters=1)
        nchw, last = (summarize(times[f])['median_ms'] for f in forms)
        print(f'| {spec} | {nchw:.1f} | {last:.1f} | {last / nchw:.2f} | {str(type(fused).deploy_memory_format)} |')


if __name__ == '__main__':
    main()
