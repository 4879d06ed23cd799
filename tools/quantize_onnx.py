#!/usr/bin/env python
"""INT8 ONNX of a fused model (onnxruntime static quantization) and what INT8 costs it.

    python tools/quantize_onnx.py CONFIG CHECKPOINT --out model.int8.onnx
        [--backbone-only | --features-only] [--shape H W] [--no-fuse]
        [--calib-dir DIR] [--calib-n 16] [--eval-n 4] [--calib-method minmax|entropy|percentile]
        [--exclude REGEX] [--activation-bits 8|16] [--range-report K] [--min-sqnr DB] [--threads 2]
        [--fused-layout auto|default] [--eval]
    python tools/quantize_onnx.py RepGhostNet:0.5x none --out bb.int8.onnx --shape 64 64   # smoke test

CONFIG / CHECKPOINT as for tools/export_onnx.py: an mm config (whole detector / segmentor in tensor
mode, ``--features-only`` backbone + neck, ``--backbone-only``) or a registered backbone
``NAME[:ARCH]``; ``none`` keeps the random initialisation (smoke tests only).

Steps: the model is fused with ``rep_backbones.fuse`` (``--no-fuse``: taken as built, e.g. a deploy
config with a fused checkpoint) and refused if any backbone is not in deploy form or still has
BatchNorm; put in its family's INT8-friendlier exact fused layout (``--fused-layout auto``, the default:
``prepare_int8_fusion`` / ``to_int8_layout`` of the backbone, e.g. RepMobile's identity shortcut kept as an
Add, RepNeXt M at level 2; ``default``: as fused; the report names the layout used; docs/int8.md); exported
to fp32 ONNX (``--fp32-out``, default next to ``--out``), checked against
PyTorch; quantized with ``onnxruntime.quantization.quantize_static`` (QDQ, int8 per-channel
weights, uint8 per-tensor activations, calibrated on the first ``--calib-n`` images of
``--calib-dir`` or of a generated toy COCO training set); then the parity report on ``--eval-n``
held-out images (the next images of ``--calib-dir``, or the toy validation set): per output the
SQNR in dB and the max abs error of INT8 vs fp32 onnxruntime. ``--range-report K`` lists the K
quantized tensors with the lowest SQNR (float range, channel spread). Both ONNX files are written
atomically. Images are resized to ``--shape`` and normalised by the model's data preprocessor
(configs) or with ImageNet mean/std (bare backbones).

``--eval`` (alias ``--eval-map``): task accuracy of fp32 vs INT8 onnxruntime on the config's test set,
scored by the config's own evaluator. The graph is exported at the size the config's test pipeline
makes, calibrated on the config's training images (unless ``--calib-dir``), and every test image is
run through both graphs. Single-stage detectors (e.g. configs/toy/toy_retinanet_repghost_1_0x.py):
post-processing ``bbox_head.predict_by_feat``, mmdet's evaluator (bbox mAP, mAP@50). Segmentors
(e.g. configs/toy/toy_fpn_repghost_1_0x_ade20k.py): logits resized and arg-maxed as mmseg's
``predict`` does (``decode_head.predict_by_feat``, ``postprocess_result``), mmseg's ``IoUMetric``
(aAcc, mIoU, mAcc in percent), plus the INT8 graph's agreement with fp32 (percent of pixels with the same
arg-max class, logits SQNR), which tells a broken quantization apart even where the model is too weak
for its mIoU to. Other models (two-stage detectors, backbones) are refused.

The per-family table of docs/int8.md is ``tools/analysis/int8_family_table.py``; whole models from a trained
checkpoint, on onnxruntime or OpenVINO, with their report card: ``tools/deploy.py``.

Exit status: 0 done; 1 an output's SQNR below ``--min-sqnr``; 2 refused (the model is not fused).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

import rep_backbones
from rep_backbones.deploy import data, forms
from rep_backbones.deploy import quantize as q
from rep_backbones.fusion import find_rep_backbones
from rep_backbones.io.build import (
    NO_CHECKPOINT,
    TensorModeWrapper,
    build_from_spec,
    build_model_from_config,
    is_backbone_spec,
    shape_tuple,
)

LAYOUT_CHOICES = ('auto', 'default')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('config', nargs='?', help='mm config file, or a registered backbone as NAME[:ARCH]')
    parser.add_argument('checkpoint', nargs='?', help="checkpoint file, or 'none' (random init, smoke tests)")
    parser.add_argument('--out', help='INT8 ONNX file to write')
    parser.add_argument('--fp32-out', help='fp32 ONNX file to write (default: next to --out, .fp32.onnx)')
    part = parser.add_mutually_exclusive_group()
    part.add_argument('--backbone-only', action='store_true', help='export the backbone only')
    part.add_argument('--features-only', action='store_true', help='export backbone + neck (extract_feat)')
    parser.add_argument('--shape', type=int, nargs='+', default=None, metavar=('H', 'W'),
                        help='input height and width (default 512 512; 64 64 is enough for a smoke test)')
    parser.add_argument('--no-fuse', action='store_true',
                        help='do not fuse (the model must already be in deploy form: it is refused otherwise)')
    parser.add_argument('--calib-dir', help='folder of calibration images (default: a generated toy COCO set)')
    parser.add_argument('--calib-n', type=int, help='calibration images (default 16)')
    parser.add_argument('--eval-n', type=int, default=4, help='held-out images for the parity report (default 4)')
    parser.add_argument('--calib-method', default='minmax', choices=q.CALIBRATION_METHODS)
    parser.add_argument('--exclude', metavar='REGEX',
                        help="keep the nodes whose ONNX name matches in float (e.g. 'conv_dw/Conv$')")
    parser.add_argument('--activation-bits', type=int, choices=(8, 16), default=8,
                        help='16: uint16 activations (A16W8), a diagnostic of how much error the activations cause')
    parser.add_argument('--range-report', type=int, default=0, metavar='K',
                        help='print the K quantized tensors with the lowest SQNR (on one held-out image)')
    parser.add_argument('--min-sqnr', type=float, help='exit 1 if an output SQNR (dB) is below this')
    parser.add_argument('--eval', '--eval-map', dest='eval', action='store_true',
                        help="task accuracy of fp32 vs INT8 onnxruntime on the config's test set with its own "
                             'evaluator: bbox mAP (single-stage detectors, mmdet) or aAcc/mIoU/mAcc (segmentors, '
                             "mmseg IoUMetric); the input size comes from the test pipeline, calibration from the "
                             'training set unless --calib-dir')
    parser.add_argument('--fused-layout', choices=LAYOUT_CHOICES, default='auto',
                        help="auto (default): the family's INT8-friendlier exact fused layout (RepMobile identity "
                             'split out, RepNeXt M level 2; docs/int8.md); default: as fused')
    parser.add_argument('--threads', type=int, default=2, help='onnxruntime / PyTorch threads (default 2)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    args = parser.parse_args(argv)
    if not (args.config and args.checkpoint and args.out):
        parser.error('CONFIG, CHECKPOINT and --out are required')
    args.calib_n = args.calib_n or 16
    if args.calib_n < 1 or args.eval_n < 1:
        parser.error('--calib-n and --eval-n must be >= 1')
    if args.eval and (args.backbone_only or args.features_only or is_backbone_spec(args.config or '')):
        parser.error('--eval needs a whole single-stage detector or segmentor: an mm config, without '
                     '--backbone-only/--features-only')
    return args


def default_fp32_path(out: str) -> str:
    name = Path(out).name
    stem = name[:-len('.int8.onnx')] if name.endswith('.int8.onnx') else Path(name).stem
    return str(Path(out).with_name(f'{stem}.fp32.onnx'))


def build(args):
    """``(model, module_to_export, preprocess)``."""
    if is_backbone_spec(args.config):
        model = build_from_spec(args.config)
        if args.checkpoint not in NO_CHECKPOINT:
            model.load_pretrained(args.checkpoint)
        return model, model, data.imagenet_preprocess
    model = build_model_from_config(args.config, args.checkpoint)
    part = 'backbone' if args.backbone_only else 'features' if args.features_only else 'full'
    return model, TensorModeWrapper(model, part).eval(), data.mm_preprocess(model)


def images(args, shape):
    """``(calibration files, evaluation files)``."""
    if args.calib_dir:
        files = data.list_images(args.calib_dir)
        calib, evals = files[:args.calib_n], files[args.calib_n:args.calib_n + args.eval_n]
        if len(calib) < args.calib_n:
            print(f'note: {args.calib_dir} has {len(files)} images, calibrating on all of them')
        if not evals:
            print('note: no images left for the parity report; it uses the calibration images')
            evals = calib[:args.eval_n]
        return calib, evals
    train, val = data.toy_image_folders(f'data/toy_quant_{shape[0]}x{shape[1]}', args.calib_n, args.eval_n, shape)
    return data.list_images(train)[:args.calib_n], data.list_images(val)[:args.eval_n]


TASK_METRIC_KEYS = {'detection': ('bbox_mAP', 'bbox_mAP_50'), 'segmentation': ('aAcc', 'mIoU', 'mAcc')}


def eval_task(model) -> Optional[str]:
    """``'detection'`` (single-stage detector) or ``'segmentation'`` (segmentor): what ``--eval`` scores."""
    try:
        kind = forms.kind(model)
    except ValueError:
        return None
    return {'single_stage': 'detection', 'segmentor': 'segmentation'}.get(kind)


def fuse_for_int8(model, layout: str, fuse: bool):
    """Fuse (unless ``fuse`` is False) into ``layout`` (``auto``: each backbone's ``prepare_int8_fusion`` /
    ``to_int8_layout``); returns ``[(label, layout name)]``. Raises ``UnfusedModelError``."""
    if fuse:
        if layout == 'auto':
            for _, backbone in find_rep_backbones(model):
                backbone.prepare_int8_fusion()
        rep_backbones.fuse(model)
    q.assert_fused(model)
    return [(f'{name or "model"} ({type(b).__name__})', b.to_int8_layout() if layout == 'auto' else 'default')
            for name, b in find_rep_backbones(model)]


def task_accuracy(model, task, sessions, dataset, batches, progress):
    """The config's evaluator on each session's predictions (name -> metrics); for a segmentor also the
    percent of pixels whose INT8 arg-max class is fp32's."""
    labels = {name: [] for name in sessions}

    def recording(name, predict):
        def run(batch):
            samples = predict(batch)
            if task == 'segmentation':
                labels[name].append(torch.cat([s.pred_sem_seg.data.flatten() for s in samples]))
            return samples
        return run
    predictors = {name: recording(name, forms.backend_predictor(model, session)) for name, session in sessions.items()}
    scores = forms.evaluate(model, predictors, dataset, batches, progress)
    if task == 'segmentation':
        same = sum(int((a == b).sum()) for a, b in zip(labels['fp32'], labels['INT8']))
        scores['INT8']['argmax_agreement'] = 100.0 * same / max(sum(a.numel() for a in labels['fp32']), 1)
    return scores


def quantize_one(args) -> int:
    from rep_backbones.deploy.export import check_onnx, export_onnx
    from rep_backbones.deploy.ranges import range_report
    from rep_backbones.deploy.runtimes import Session
    from rep_backbones.deploy.verify import parity
    shape = shape_tuple(args.shape or [512])
    t0 = time.perf_counter()
    try:
        model, module, preprocess = build(args)
    except ValueError as err:                     # e.g. a two-stage detector in tensor mode
        print(f'REFUSED: {err}', file=sys.stderr)
        return 2
    try:
        layouts = fuse_for_int8(model, args.fused_layout, not args.no_fuse)
    except q.UnfusedModelError as err:
        print(f'REFUSED: {err}', file=sys.stderr)
        return 2
    task = eval_task(model) if args.eval else None
    if args.eval and task is None:
        print(f'REFUSED: --eval scores single-stage detectors (bbox mAP) and segmentors (mIoU); '
              f'{type(model).__name__} is neither', file=sys.stderr)
        return 2
    print(f'built {args.config} ({"as built" if args.no_fuse else "fused"}) in {time.perf_counter() - t0:.1f} s; '
          f'fused layout (--fused-layout {args.fused_layout}): '
          + ', '.join(f'{label} {layout}' for label, layout in layouts))
    if args.eval:
        dataset, batches = data.evaluation_set(model)
        with torch.no_grad():
            sizes = {tuple(model.data_preprocessor(dict(b), False)['inputs'].shape[-2:]) for b in batches}
        if len(sizes) != 1:
            print(f'--eval: the test images preprocess to several sizes {sorted(sizes)}; the ONNX graph has '
                  'one fixed input size', file=sys.stderr)
            return 2
        shape = sizes.pop()
        print(f'--eval ({task}): {len(batches)} test images of {dataset.data_root or dataset.ann_file}; '
              f'input size {shape} from the pipeline')
    if args.eval and not args.calib_dir:
        calib_files = data.dataset_image_files(model, 'train')[:args.calib_n]
        eval_files = [Path(b['data_samples'][0].img_path) for b in batches[:args.eval_n]]
    else:
        calib_files, eval_files = images(args, shape)
    calib = data.load_inputs(calib_files, shape, preprocess)
    evals = data.load_inputs(eval_files, shape, preprocess)
    print(f'calibration: {len(calib_files)} images from {Path(calib_files[0]).parent}; parity: {len(eval_files)} '
          f'images from {Path(eval_files[0]).parent}; input {tuple(calib[0].shape)}')

    torch.set_num_threads(args.threads)
    fp32_path = args.fp32_out or default_fp32_path(args.out)
    example = torch.from_numpy(evals[0])
    names = export_onnx(module, example, fp32_path)
    max_abs, rel = check_onnx(module, fp32_path, example)
    print(f'fp32 ONNX {fp32_path}: {len(names)} outputs; onnxruntime vs PyTorch max |diff| {max_abs:.3g} '
          f'(relative {rel:.3g})')
    t0 = time.perf_counter()
    try:
        excluded = q.quantize_onnx(fp32_path, args.out, calib, method=args.calib_method,
                                   progress=not args.no_progress, exclude=args.exclude,
                                   activation_bits=args.activation_bits)
    except q.UnfusedModelError as err:
        print(f'REFUSED: {err}', file=sys.stderr)
        return 2
    print(f'INT8 ONNX {args.out} ({args.calib_method} calibration'
          f'{f", {len(excluded)} nodes kept in float" if args.exclude else ""}) in {time.perf_counter() - t0:.1f} s')

    sessions = {'fp32': Session('onnxruntime', fp32_path, args.threads),
                'INT8': Session('onnxruntime', args.out, args.threads)}
    rows = parity(sessions['fp32'], sessions['INT8'], evals)
    print(f'parity, INT8 vs fp32 onnxruntime on {len(evals)} held-out images:')
    for row in rows:
        print(f'  {row.line()}')
    if args.range_report:
        print(f'range report: the {args.range_report} quantized tensors with the lowest SQNR (1 image):')
        for row in range_report(fp32_path, args.out, evals[:1])[:args.range_report]:
            print(f'  {row.line()}')
    if args.eval:
        scores = task_accuracy(model, task, sessions, dataset, batches, not args.no_progress)
        print(f'{task} accuracy on {len(batches)} test images ({"bbox mAP" if task == "detection" else "percent"}):')
        for name, metrics in scores.items():
            print(f'{name} onnxruntime: ' + ', '.join(f'{k} {v:.3f}' if task == 'detection' else f'{k} {v:.2f}'
                                                     for k, v in metrics.items()
                                                     if k.endswith(TASK_METRIC_KEYS[task])))
        if task == 'segmentation':
            with torch.no_grad():
                inputs = [model.data_preprocessor(dict(b), False)['inputs'].numpy() for b in batches]
            logits = parity(sessions['fp32'], sessions['INT8'], inputs)[0]
            print(f'INT8 vs fp32 onnxruntime: arg-max agreement {scores["INT8"]["argmax_agreement"]:.2f} % of pixels, '
                  f'logits SQNR {logits.sqnr_db:.1f} dB')
    worst = min(row.sqnr_db for row in rows)
    if args.min_sqnr is not None and worst < args.min_sqnr:
        print(f'FAILED: lowest output SQNR {worst:.1f} dB < --min-sqnr {args.min_sqnr:g}', file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return quantize_one(args)


if __name__ == '__main__':
    sys.exit(main())
