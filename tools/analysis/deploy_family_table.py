#!/usr/bin/env python
"""Family table of deployment on trained models: per backbone family, the toy RetinaNet trained with the main
job's recipe (configs/toy/toy_retinanet_repghost_1_0x.py, backbone swapped), then tools/deploy.py's forms
on each backend and precision: bbox mAP / mAP@75 and end-to-end latency (image file in, detections out).

    python tools/analysis/deploy_family_table.py --work-dir DIR [--families RepGhostNet RepNeXt ...]
        [--backends onnxruntime openvino] [--max-drop 0.01] [--rounds 3] [--time-n 4] [--threads 2]
        [--auto] [--size H W]

``--auto``: one ``tools/deploy.py --backend auto --precision auto`` run per family instead (every runtime and
quantizer tried, the fastest within ``--max-drop`` kept); the table then has one row per candidate, with the
network alone (the graph on one input) beside the end-to-end time, and the network's time over onnxruntime
fp32's. ``--size H W``: test images resized to exactly ``H x W`` (the toy set is drawn at 160 x 192).

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


def auto_row(card: dict) -> dict:
    """What the family table keeps of an auto deployment's card: per candidate its metrics and times."""
    forms = card['forms']
    base = forms['training form (mmdet)']['latency']['median_ms']
    ort_network = next(c['network_ms'] for c in card['selection']['candidates'] if c['name'] == 'onnxruntime fp32')
    candidates = [dict(name=c['name'], status=c['status'], drop=c['drop'], network_ms=c['network_ms'],
                       median_ms=c['median_ms'], network_vs_ort_fp32=c['network_ms'] / ort_network,
                       speedup_vs_training_form=base / c['median_ms'],
                       bbox_mAP=forms[c['name']]['metrics']['coco/bbox_mAP'],
                       bbox_mAP_75=forms[c['name']]['metrics']['coco/bbox_mAP_75'])
                  for c in card['selection']['candidates'] if c['name'] in forms]
    return dict(training_form=dict(median_ms=base, bbox_mAP=forms['training form (mmdet)']['metrics']['coco/bbox_mAP'],
                                   bbox_mAP_75=forms['training form (mmdet)']['metrics']['coco/bbox_mAP_75']),
                candidates=candidates, chosen=card['selection']['chosen'], reason=card['selection']['reason'])


def print_auto(rows: list) -> None:
    print('| backbone | candidate | bbox mAP | mAP@75 | drop | end-to-end ms | speed-up vs training form | '
          'network ms | network / onnxruntime fp32 | outcome |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for row in rows:
        t = row['auto']['training_form']
        print(f"| {row['spec']} | training form (mmdet) | {t['bbox_mAP']:.3f} | {t['bbox_mAP_75']:.3f} | | "
              f"{t['median_ms']:.1f} | 1.00x | | | |")
        for c in row['auto']['candidates']:
            print(f"| {row['spec']} | {c['name']} | {c['bbox_mAP']:.3f} | {c['bbox_mAP_75']:.3f} | {c['drop']:.3f} | "
                  f"{c['median_ms']:.1f} | {c['speedup_vs_training_form']:.2f}x | {c['network_ms']:.1f} | "
                  f"{c['network_vs_ort_fp32']:.2f}x | {c['status']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--families', nargs='+', default=list(BACKBONES))
    parser.add_argument('--backends', nargs='+', default=['onnxruntime', 'openvino'])
    parser.add_argument('--max-drop', type=float, default=None)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--time-n', type=int, default=4)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--auto', action='store_true', help='one auto deployment per family (every candidate)')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), help='test images resized to H x W')
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
        if args.size:     # the test pipeline's Resize (index 1), to exactly H x W
            cfg = dict(cfg, **{'test_dataloader.dataset.pipeline.1.scale': (args.size[1], args.size[0]),
                               'test_dataloader.dataset.pipeline.1.keep_ratio': False})
        if args.auto:
            options = DeployOptions(backend='auto', precision='auto', max_drop=args.max_drop, rounds=args.rounds,
                                    time_n=args.time_n, threads=args.threads)
            rows.append(dict(spec=spec, auto=auto_row(deploy(TOY, checkpoint, family_dir, options, cfg))))
            continue
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
    write_json(dict(rows=rows, threads=args.threads, rounds=args.rounds, time_n=args.time_n, size=args.size),
               os.path.join(args.work_dir, 'family_table.json'))
    if args.auto:
        print_auto(rows)
        return
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
