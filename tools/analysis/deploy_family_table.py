#!/usr/bin/env python
"""Family table of deployment on trained models: per backbone family, the toy RetinaNet trained with the main
job's recipe (configs/toy/toy_retinanet_repghost_1_0x.py, backbone swapped), then tools/deploy.py's forms
on each backend and precision: bbox mAP / mAP@75 and end-to-end latency (image file in, detections out).

    python tools/analysis/deploy_family_table.py --work-dir DIR [--families RepGhostNet RepNeXt ...]
        [--backends onnxruntime openvino] [--max-drop 0.01] [--rounds 3] [--time-n 4] [--threads 2]

The variant of each family is its first ``representative_archs`` (``rep_backbones.models.registry``). Trained
checkpoints are cached in DIR/<family>/ (a second run reuses them; a killed training resumes). The toy data
(``data/toy_coco``, relative to the current directory) is generated when missing. Prints one Markdown table
and writes DIR/family_table.json.
"""
import argparse
import os
import subprocess
import sys

import torch

from rep_backbones.deploy.pipeline import DeployOptions, deploy
from rep_backbones.deploy.quantize import AccuracyTargetError
from rep_backbones.io.atomic import write_json
from rep_backbones.models.registry import BACKBONES, family_specs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY = os.path.join(ROOT, 'configs', 'toy', 'toy_retinanet_repghost_1_0x.py')


def family_options(spec: str) -> dict:
    """``--cfg-options`` that put ``spec``'s backbone (``Family:arch``) into the toy RetinaNet, the neck's input
    widths read from a forward of the backbone."""
    family, arch = spec.split(':')
    backbone = BACKBONES[family](arch=arch).eval()
    with torch.no_grad():
        widths = [int(o.shape[1]) for o in backbone(torch.zeros(1, 3, 64, 64))]
    return {'model.backbone.type': family, 'model.backbone.arch': arch, 'model.neck.in_channels': widths}


def trained_checkpoint(spec: str, work_dir: str, options: dict) -> str:
    """Train (or resume, or reuse) the toy RetinaNet of ``spec`` in ``work_dir``; returns the last checkpoint."""
    final = os.path.join(work_dir, 'iter_320.pth')
    if not os.path.isfile(final):
        cfg = [f'{k}={",".join(map(str, v)) if isinstance(v, list) else v}' for k, v in options.items()]
        cmd = [sys.executable, os.path.join(ROOT, 'tools', 'train.py'), TOY, '--work-dir', work_dir, '--resume',
               '--cfg-options', *cfg]
        print(f'[{spec}] training: {" ".join(cmd)}', flush=True)
        subprocess.run(cmd, check=True)
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--families', nargs='+', default=list(BACKBONES))
    parser.add_argument('--backends', nargs='+', default=['onnxruntime', 'openvino'])
    parser.add_argument('--max-drop', type=float, default=None)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--time-n', type=int, default=4)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    from rep_backbones.toy_data import make_toy_coco
    make_toy_coco('data/toy_coco')
    first = {}
    for spec in family_specs(args.families):
        first.setdefault(spec.split(':')[0], spec)       # one variant per family
    rows = []
    for spec in first.values():
        family_dir = os.path.join(args.work_dir, spec.split(':')[0])
        cfg = family_options(spec)
        checkpoint = trained_checkpoint(spec, family_dir, cfg)
        for backend in args.backends:
            options = DeployOptions(backend=backend, precision='int8', max_drop=args.max_drop, rounds=args.rounds,
                                    time_n=args.time_n, threads=args.threads)
            try:
                card = deploy(TOY, checkpoint, family_dir, options, cfg)
            except AccuracyTargetError as err:
                rows.append(dict(spec=spec, backend=backend, error=str(err)))
                continue
            rows.append(dict(spec=spec, backend=backend, quantizer=card['quantizer'], forms={
                name: dict(bbox_mAP=f['metrics']['coco/bbox_mAP'], bbox_mAP_75=f['metrics']['coco/bbox_mAP_75'],
                           median_ms=f['latency']['median_ms'], p90_ms=f['latency']['p90_ms'])
                for name, f in card['forms'].items()}))
    write_json(dict(rows=rows, threads=args.threads, rounds=args.rounds, time_n=args.time_n),
               os.path.join(args.work_dir, 'family_table.json'))
    print('| backbone | backend | form | bbox mAP | mAP@75 | median ms | p90 ms | speed-up vs training form |')
    print('|---|---|---|---|---|---|---|---|')
    for row in rows:
        if 'error' in row:
            print(f"| {row['spec']} | {row['backend']} | INT8 refused: {row['error']} | | | | | |")
            continue
        base = row['forms']['training form (mmdet)']['median_ms']
        for name, f in row['forms'].items():
            print(f"| {row['spec']} | {row['backend']} | {name} | {f['bbox_mAP']:.3f} | {f['bbox_mAP_75']:.3f} | "
                  f"{f['median_ms']:.1f} | {f['p90_ms']:.1f} | {base / f['median_ms']:.2f}x |")


if __name__ == '__main__':
    main()
