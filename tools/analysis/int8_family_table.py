#!/usr/bin/env python
"""The per-family INT8 table of docs/int8.md (an experiment): one variant per family, random weights with
realistic BatchNorm statistics, each exact fused layout quantized by onnxruntime; SQNR per output, latency
of fp32 eager / fp32 onnxruntime / INT8 onnxruntime, and the worst quantized tensors.

    python tools/analysis/int8_family_table.py [--shape 512 512] [--threads 2] [--rounds 5]
        [--calib-n 8] [--eval-n 4] [--specs NAME:ARCH ...] [--out-json FILE]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
from typing import Iterable, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from rep_backbones import fuse
from rep_backbones.benchmark import Settings
from rep_backbones.deploy.data import imagenet_preprocess, list_images, load_inputs, toy_image_folders
from rep_backbones.deploy.export import export_onnx
from rep_backbones.deploy.quantize import quantize_onnx
from rep_backbones.deploy.ranges import RangeRow, range_report
from rep_backbones.deploy.runtimes import Session
from rep_backbones.deploy.timing import interleaved, summarize
from rep_backbones.deploy.verify import parity
from rep_backbones.io.atomic import PathLike, write_json
from rep_backbones.io.build import build_from_spec, shape_tuple
from rep_backbones.models.registry import family_specs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from int8_layouts import fused_layouts  # noqa: E402  (tools/analysis/int8_layouts.py)


@torch.no_grad()
def calibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], seed: int = 0) -> nn.Module:
    """Realistic BatchNorm state for a randomly initialised model (the family table's setting).

    Every BN gets a seeded random affine -- ``weight`` log-uniform in [0.25, 2] (trained nets'
    per-channel gains differ by this order), ``bias`` uniform in [-0.5, 0.5] -- and running
    statistics measured on ``batches`` (train-mode forward, cumulative average over the batches),
    so that each BN normalises what it really sees on images and activations stay at their natural
    scale through deep nets. Returns ``model`` in eval mode.
    """
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for m in norms:
        if m.affine:
            m.weight.copy_(torch.exp(torch.empty(m.num_features).uniform_(math.log(0.25), math.log(2.0),
                                                                             generator=gen)))
            m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
        m.reset_running_stats()
        m.momentum = None                      # cumulative moving average over the batches
    model.train()
    for x in batches:
        model(x)
    return model.eval()


def measure_fused(module: nn.Module, calib: Sequence[np.ndarray], evals: Sequence[np.ndarray], workdir: PathLike,
                  tag: str, threads: int = 2, timing=None, range_images: int = 0, progress: bool = False) -> dict:
    """Export ``module`` (fused, eval), quantize it and measure: ``sqnr_db`` / ``max_abs`` per output
    on ``evals``; with ``timing`` (a benchmark ``Settings``: warm-up, interleaved rounds) the
    median / p90 latency of eager PyTorch, fp32 onnxruntime and INT8 onnxruntime on ``evals[0]``;
    with ``range_images`` the :func:`range_report` on that many of ``evals``."""
    fp32_path = os.path.join(workdir, f'{tag}.fp32.onnx')
    int8_path = os.path.join(workdir, f'{tag}.int8.onnx')
    export_onnx(module, torch.from_numpy(evals[0]), fp32_path)
    quantize_onnx(fp32_path, int8_path, calib, progress=progress)
    fp32, int8 = Session('onnxruntime', fp32_path, threads), Session('onnxruntime', int8_path, threads)
    result = dict(outputs=[dataclasses.asdict(p) for p in parity(fp32, int8, evals)])
    if timing is not None:
        x = torch.from_numpy(evals[0])
        with torch.inference_mode():
            times = interleaved({'fp32 eager': lambda: module(x), 'fp32 ort': lambda: fp32.run(evals[0]),
                                 'int8 ort': lambda: int8.run(evals[0])}, timing.rounds, timing.iters, timing.warmup)
        result['latency'] = {name: summarize(t, 1) for name, t in times.items()}
    if range_images:
        result['ranges'] = range_report(fp32_path, int8_path, evals[:range_images])
    return result


def family_table(specs: Sequence[str] = tuple(family_specs()), settings=None, n_calib: int = 8, n_eval: int = 4,
                 data_root: Optional[PathLike] = None, seed: int = 0, top_k: int = 3,
                 progress: bool = True) -> List[dict]:
    """Measure every backbone of ``specs`` (the docs/int8.md table), one dict per backbone.

    ``settings``: a benchmark ``Settings`` (input ``shape``, ``threads``, timing rounds;
    default 512x512, 2 threads, 3 warm-up calls, 5 rounds of 2 interleaved calls). Setting: weights
    from PyTorch's default init after ``torch.manual_seed(seed)``, BatchNorm from
    :func:`calibrate_bn` on the ``n_calib`` toy-COCO training images; quantization calibrated on the
    same images; SQNR on ``n_eval`` toy-COCO validation images (``data_root``, default
    ``data/toy_quant_HxW``, generated at the input size); ImageNet normalisation; batch 1. As a
    sensitivity check the same weights with BatchNorm as initialised (identity) are quantized too
    (``init_bn_outputs``), and as a precision diagnostic the default layout with 16-bit activations
    (``a16w8_outputs``: what is left is the int8 weights' share of the error).
    """
    from tqdm import tqdm
    settings = Settings() if settings is None else settings
    shape, threads = tuple(settings.shape), settings.threads
    root = data_root or f'data/toy_quant_{shape[0]}x{shape[1]}'
    train_dir, val_dir = toy_image_folders(root, n_calib, n_eval, shape)
    calib = load_inputs(list_images(train_dir)[:n_calib], shape, imagenet_preprocess)
    evals = load_inputs(list_images(val_dir)[:n_eval], shape, imagenet_preprocess)
    bn_batches = [torch.from_numpy(np.concatenate(calib[i:i + 4])) for i in range(0, len(calib), 4)]
    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for spec in tqdm(specs, desc='family table', unit='net', disable=not progress):
            tag = spec.replace(':', '_')
            torch.manual_seed(seed)
            model = calibrate_bn(build_from_spec(spec), bn_batches, seed)
            layouts = fused_layouts(model)
            x = torch.from_numpy(evals[0])
            with torch.no_grad():
                ref = layouts['default'](x)
            torch.manual_seed(seed)                        # same weights, BatchNorm as initialised
            init_bn = measure_fused(fuse(build_from_spec(spec)), calib, evals, workdir, 'init_bn', threads)
            row = dict(spec=spec, init_bn_outputs=init_bn['outputs'], layouts={})
            for name, module in layouts.items():
                with torch.no_grad():
                    out = module(x)
                diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(out, ref))
                measured = measure_fused(module, calib, evals, workdir, f'{tag}_{name}',
                                         threads, settings if name == 'default' else None,
                                         1 if name == 'default' else 0)
                measured['rel_diff_vs_default'] = diff
                if 'ranges' in measured:
                    worst = measured['ranges'][:top_k]
                    worst += [r for r in measured['ranges'] if r.kind == 'weight' and r not in worst][:2]
                    measured['ranges'] = [dataclasses.asdict(r) for r in worst]
                row['layouts'][name] = measured
            fp32, a16 = (os.path.join(workdir, f'{tag}_default.{kind}.onnx') for kind in ('fp32', 'a16w8'))
            quantize_onnx(fp32, a16, calib, progress=False, activation_bits=16)
            row['a16w8_outputs'] = [dataclasses.asdict(p) for p in parity(
                Session('onnxruntime', fp32, threads), Session('onnxruntime', a16, threads), evals)]
            rows.append(row)
    return rows


def format_family_table(rows: Sequence[dict]) -> str:
    """Markdown: latency and SQNR table, SQNR per exact layout, worst quantized tensors per backbone."""
    def ms(lat: dict) -> str:
        return f"{lat['median_ms']:.1f} / {lat['p90_ms']:.1f}"

    def sqnr(outputs: Sequence[dict]) -> str:
        return ' / '.join(f"{o['sqnr_db']:.1f}" for o in outputs)

    lines = ['| backbone | fp32 eager fused (ms) | fp32 onnxruntime (ms) | INT8 onnxruntime (ms) | INT8 speed-up vs '
             'fp32 onnxruntime | SQNR (dB), stride 4 / 8 / 16 / 32 | same, 16-bit activations | same, BN at init |',
             '|---|---|---|---|---|---|---|---|']
    for row in rows:
        d = row['layouts']['default']
        lat = d['latency']
        lines.append(f"| {row['spec']} | {ms(lat['fp32 eager'])} | {ms(lat['fp32 ort'])} | {ms(lat['int8 ort'])} | "
                     f"{lat['fp32 ort']['median_ms'] / lat['int8 ort']['median_ms']:.2f}x | {sqnr(d['outputs'])} | "
                     f"{sqnr(row['a16w8_outputs'])} | {sqnr(row['init_bn_outputs'])} |")
    lines += ['', 'Exact fused layouts (fp32: max |out - default| / max |default|; SQNR of INT8 vs fp32):', '',
              '| backbone | layout | fp32 rel. diff vs default | SQNR (dB), stride 4 / 8 / 16 / 32 |',
              '|---|---|---|---|']
    for row in rows:
        for name, d in row['layouts'].items():
            lines.append(f"| {row['spec']} | {name} | {d['rel_diff_vs_default']:.1e} | {sqnr(d['outputs'])} |")
    lines += ['', 'Range report of each default layout (1 image): the tensors with the lowest single-step SQNR, '
              'then the two weights with the lowest; columns: kind, SQNR of its own quantization, SQNR '
              'accumulated up to it (activations), float range, channel spread, tensor:', '']
    for row in rows:
        lines.append(f"{row['spec']}:")
        lines += ['  ' + RangeRow(**r).line() for r in row['layouts']['default']['ranges']]
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--specs', nargs='+', default=family_specs(), help='backbones of the table')
    parser.add_argument('--shape', type=int, nargs='+', default=[512], metavar=('H', 'W'))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=5, help='interleaved timing rounds (2 calls each)')
    parser.add_argument('--calib-n', type=int, default=8)
    parser.add_argument('--eval-n', type=int, default=4)
    parser.add_argument('--range-report', type=int, default=3, metavar='K', help='worst tensors listed per backbone')
    parser.add_argument('--out-json', help='also write the table data as JSON (atomically)')
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)
    settings = Settings(shape=shape_tuple(args.shape), threads=args.threads, rounds=args.rounds)
    rows = family_table(args.specs, settings, n_calib=args.calib_n, n_eval=args.eval_n, top_k=args.range_report,
                        progress=not args.no_progress)
    print(f'INT8 family table: input {settings.shape[0]}x{settings.shape[1]}, batch 1, {settings.threads} threads, '
          f'{args.calib_n} calibration + {args.eval_n} evaluation toy images, {settings.warmup} warm-up + '
          f'{settings.rounds} rounds x {settings.iters} interleaved calls; median / p90 ms\n')
    print(format_family_table(rows))
    if args.out_json:
        write_json(dict(settings=settings.public(), calib_n=args.calib_n, eval_n=args.eval_n, rows=rows),
                   args.out_json)
    return 0


if __name__ == '__main__':
    sys.exit(main())
