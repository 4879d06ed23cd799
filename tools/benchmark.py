#!/usr/bin/env python
"""Latency / throughput of backbones or whole models: training form vs fused vs onnxruntime.

    # one variant of every registered backbone family (each family's default arch)
    python tools/benchmark.py --backbone all --shape 512 512 --batch 1 --threads 2
    # chosen backbones
    python tools/benchmark.py --backbone RepGhostNet:1.0x RepNeXt:M1
    # a whole detector / segmentor from an mm config (tensor mode: backbone + neck + head)
    python tools/benchmark.py --config configs/retinanet_repghost_1_0x.py --shape 512 512
    # time rep_backbones.fuse on a whole Mask R-CNN (backbone + neck only are run for latency)
    python tools/benchmark.py --config mmdet::_base_/models/mask-rcnn_r50_fpn.py \\
        --swap-backbone RepGhostNet:1.0x --part features --variants train fused

Variants (``--variants``, default all three): ``train`` = the training structure in eval mode,
``fused`` = after ``rep_backbones.fuse`` (the time that fusion took is reported too), ``ort`` = the
fused model exported with the TorchScript ONNX exporter (as ``tools/export_onnx.py`` does) and run by
onnxruntime with ``intra_op_num_threads = --threads``. PyTorch runs under ``torch.inference_mode``
with ``torch.set_num_threads(--threads)``.

Protocol: every variant is warmed up (``--warmup`` iterations), then ``--rounds`` rounds run each
variant ``--iters`` times in turn (interleaved, so that load changes on a shared machine hit all
variants alike; compare ratios, not absolute numbers, across runs). Every iteration is timed on its
own with ``time.perf_counter`` (after ``torch.cuda.synchronize()`` with ``--device cuda``); the
median, p90 and mean are reported, throughput = batch / median. Input: ``torch.randn`` of
``batch x 3 x H x W`` (for configs: the already normalised tensor, no data preprocessor and no
post-processing/NMS, see tools/export_onnx.py).

Output: a markdown table on stdout, ``<out-dir>/<name>.json`` (settings, environment, every
measurement) and ``<out-dir>/<name>.png`` (median latency per model and variant, p90 as error bar).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / 'tools'):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import rep_backbones  # noqa: E402
from rep_backbones.models import BACKBONES, build_backbone  # noqa: E402
from rep_backbones.models.registry import default_arch  # noqa: E402

VARIANTS = ('train', 'fused', 'ort')


# -- models ------------------------------------------------------------------------------------
def backbone_specs(specs: Sequence[str]) -> List[str]:
    """Expand ``all`` into one ``NAME:ARCH`` per registered backbone (its default arch)."""
    out = []
    for spec in specs:
        if spec == 'all':
            out += [f'{name}:{default_arch(cls)}' for name, cls in sorted(BACKBONES.items())]
        else:
            name, _, arch = spec.partition(':')
            if name not in BACKBONES:
                raise SystemExit(f'unknown backbone {name!r}; registered: {", ".join(sorted(BACKBONES))}')
            out.append(f'{name}:{arch or default_arch(BACKBONES[name])}')
    return out


def build_named_backbone(spec: str) -> nn.Module:
    name, _, arch = spec.partition(':')
    return build_backbone(name, **({'arch': arch} if arch and arch != 'None' else {})).eval()


# -- timing ------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], object], n: int, device: str) -> List[float]:
    times = []
    for _ in range(n):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def summarize(times: List[float], batch: int) -> Dict[str, float]:
    ms = sorted(t * 1e3 for t in times)
    median = statistics.median(ms)
    return dict(n=len(ms), median_ms=median, p90_ms=float(np.percentile(ms, 90)), mean_ms=statistics.fmean(ms),
                min_ms=ms[0], throughput=batch / (median / 1e3))


def prepare_variants(model: nn.Module, x: torch.Tensor, variants: Sequence[str], device: str,
                     threads: int, workdir: str, tag: str) -> Dict[str, object]:
    """Callables (``fn``) for each variant plus notes (fuse time, ORT providers, skips)."""
    out: Dict[str, object] = {}
    model = model.to(device).eval()
    fused = None
    if 'fused' in variants or 'ort' in variants:
        fused = copy.deepcopy(model)
        t0 = time.perf_counter()
        rep_backbones.fuse(fused)
        out['fuse_s'] = time.perf_counter() - t0
    if 'train' in variants:
        out['train'] = lambda: model(x)
    if 'fused' in variants:
        out['fused'] = lambda: fused(x)
    if 'ort' in variants:
        import onnxruntime as ort
        from export_onnx import export, ort_session
        providers = ort.get_available_providers()
        if device.startswith('cuda') and 'CUDAExecutionProvider' not in providers:
            out['ort_skipped'] = 'onnxruntime has no CUDAExecutionProvider here'
        else:
            path = os.path.join(workdir, f'{tag}.onnx')
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                export(fused.cpu(), x.cpu(), path)
            fused.to(device)
            if device.startswith('cuda'):
                session = ort.InferenceSession(path, providers=['CUDAExecutionProvider'])
            else:
                session = ort_session(path, threads)
            feed = {session.get_inputs()[0].name: x.cpu().numpy()}
            out['ort'] = lambda: session.run(None, feed)
    return out


def benchmark(models: Dict[str, Callable[[], nn.Module]], shape=(512, 512), batch: int = 1, threads: int = 2,
              warmup: int = 5, rounds: int = 10, iters: int = 3, variants: Sequence[str] = VARIANTS,
              device: str = 'cpu', wrap: Optional[Callable[[nn.Module], nn.Module]] = None) -> dict:
    """Measure every model (name -> builder) in every variant; returns the JSON-able result."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    h, w = shape
    x = torch.randn(batch, 3, h, w, device=device)
    results = []
    fuse_times = {}
    notes = {}
    with tempfile.TemporaryDirectory() as workdir, torch.inference_mode():
        for name, builder in models.items():
            model = builder()
            if wrap is not None:
                model = wrap(model)
            with torch.inference_mode(False), torch.no_grad():
                prepared = prepare_variants(model, x, variants, device, threads, workdir,
                                            f'm{len(fuse_times)}')
            if 'fuse_s' in prepared:
                fuse_times[name] = prepared['fuse_s']
            if 'ort_skipped' in prepared:
                notes[name] = prepared['ort_skipped']
            active = [v for v in variants if v in prepared]
            for v in active:
                time_calls(prepared[v], warmup, device)
            times = {v: [] for v in active}
            for _ in range(rounds):
                for v in active:
                    times[v] += time_calls(prepared[v], iters, device)
            base = statistics.median(times['train']) if 'train' in times else None
            for v in active:
                row = dict(model=name, variant=v, **summarize(times[v], batch))
                if base:
                    row['speedup_vs_train'] = base / statistics.median(times[v])
                results.append(row)
            del prepared, model
    return dict(settings=dict(shape=[h, w], batch=batch, threads=threads, warmup=warmup, rounds=rounds,
                              iters=iters, variants=list(variants), device=device),
                environment=environment(device), fuse_seconds=fuse_times, notes=notes, results=results)


def environment(device: str) -> dict:
    import onnxruntime as ort
    env = dict(python=platform.python_version(), torch=torch.__version__, onnxruntime=ort.__version__,
               machine=platform.machine(), processor=platform.processor() or platform.machine(),
               cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads())
    try:
        env['loadavg'] = os.getloadavg()
    except OSError:
        pass
    if device.startswith('cuda') and torch.cuda.is_available():
        env['gpu'] = torch.cuda.get_device_name()
    return env


# -- reporting ---------------------------------------------------------------------------------
def markdown_table(result: dict) -> str:
    s = result['settings']
    lines = [f"batch {s['batch']}, input 3x{s['shape'][0]}x{s['shape'][1]}, {s['threads']} threads, "
             f"device {s['device']}; {s['rounds']} rounds x {s['iters']} iterations per variant "
             f"(interleaved) after {s['warmup']} warm-up", '',
             '| model | variant | median ms | p90 ms | img/s | speed-up vs train |', '|---|---|---|---|---|---|']
    for r in result['results']:
        speed = f"{r['speedup_vs_train']:.2f}x" if 'speedup_vs_train' in r else '–'
        lines.append(f"| {r['model']} | {r['variant']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
                     f"{r['throughput']:.1f} | {speed} |")
    if result['fuse_seconds']:
        lines += ['', '| model | time to fuse (s) |', '|---|---|']
        lines += [f'| {m} | {t:.3f} |' for m, t in result['fuse_seconds'].items()]
    for m, note in result.get('notes', {}).items():
        lines.append(f'\n{m}: {note}')
    return '\n'.join(lines)


def plot(result: dict, path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    models = list(dict.fromkeys(r['model'] for r in result['results']))
    variants = [v for v in result['settings']['variants'] if any(r['variant'] == v for r in result['results'])]
    width = 0.8 / max(len(variants), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(models) + 2), 4.5))
    colors = {'train': '#9e9e9e', 'fused': '#1f77b4', 'ort': '#ff7f0e'}
    for i, v in enumerate(variants):
        rows = {r['model']: r for r in result['results'] if r['variant'] == v}
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(models))]
        med = [rows[m]['median_ms'] if m in rows else 0 for m in models]
        err = [rows[m]['p90_ms'] - rows[m]['median_ms'] if m in rows else 0 for m in models]
        ax.bar(xs, med, width, yerr=[[0] * len(err), err], capsize=3, label=v, color=colors.get(v))
    s = result['settings']
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=15, ha='right', fontsize=8)
    ax.set_ylabel('latency, median ms (bar) to p90 (whisker)')
    ax.set_title(f"batch {s['batch']}, 3x{s['shape'][0]}x{s['shape'][1]}, {s['threads']} threads, {s['device']}",
                 fontsize=10)
    ax.legend(title='variant')
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- CLI ---------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--backbone', nargs='+', metavar='NAME[:ARCH]',
                      help=f'registered backbones, or "all" (one per family); registered: {", ".join(sorted(BACKBONES))}')
    what.add_argument('--config', help='mmdet / mmseg config (whole model)')
    parser.add_argument('--checkpoint', default=None, help="with --config: checkpoint, or 'none' (default)")
    parser.add_argument('--swap-backbone', metavar='NAME[:ARCH]',
                        help="with --config: replace the config's backbone (neck in_channels follow)")
    parser.add_argument('--part', choices=('full', 'features', 'backbone'), default='full',
                        help='with --config: what runs (default full tensor-mode forward)')
    parser.add_argument('--shape', type=int, nargs='+', default=[512, 512], metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2, help='torch and onnxruntime intra-op threads')
    parser.add_argument('--warmup', type=int, default=5, help='warm-up iterations per variant')
    parser.add_argument('--rounds', type=int, default=10, help='interleaved rounds')
    parser.add_argument('--iters', type=int, default=3, help='timed iterations per variant and round')
    parser.add_argument('--variants', nargs='+', choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (torch.cuda.synchronize around each run)")
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    parser.add_argument('--name', default='benchmark', help='file stem of the JSON / PNG written')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device available')
    shape = tuple(args.shape) * (2 if len(args.shape) == 1 else 1)
    wrap = None
    if args.backbone:
        models = {spec: (lambda s=spec: build_named_backbone(s)) for spec in backbone_specs(args.backbone)}
    else:
        from rep_backbones.mm.build import TensorModeWrapper, build_model_from_config, parse_backbone_spec
        swap = parse_backbone_spec(args.swap_backbone) if args.swap_backbone else None
        label = Path(args.config.split('::')[-1]).stem + (f' [{args.swap_backbone}]' if swap else '')
        models = {label: lambda: build_model_from_config(args.config, args.checkpoint, args.device, backbone=swap)}
        wrap = lambda m: TensorModeWrapper(m, args.part)  # noqa: E731
    result = benchmark(models, shape[:2], args.batch, args.threads, args.warmup, args.rounds, args.iters,
                       args.variants, args.device, wrap)
    result['command'] = 'python tools/benchmark.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f'{args.name}.json').write_text(json.dumps(result, indent=2))
    plot(result, out / f'{args.name}.png')
    print(markdown_table(result))
    print(f'\nwrote {out / (args.name + ".json")} and {out / (args.name + ".png")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
