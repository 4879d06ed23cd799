#!/usr/bin/env python
"""Latency, memory and training cost: training form vs official fused vs ours fused vs
onnxruntime, for backbones and whole detectors / segmentors.

    # family table: train / official fused / ours fused / onnxruntime, NCHW and channels_last
    python tools/benchmark.py --backbone RepGhostNet:1.0x RepNeXt:M0 MobileNetV4:S --shape 512 512
    # whole models: tensor mode and full predict (post-processing), peak memory per form
    python tools/benchmark.py --configs configs/retinanet_repghost_1_0x.py configs/mask_rcnn_repghost_1_0x.py \\
        configs/fpn_repghost_1_0x_ade20k_40k.py --memory
    # training cost: step time and peak memory with / without with_cp, ours vs timm's classifiers
    python tools/benchmark.py --train-memory --shape 320 320 --batch 2
    # only our classifiers against timm's ports of the official ones, longer
    python tools/benchmark.py --train-memory --classifiers-only --classifier-pairs RepGhostNet:1.3x=repghostnet_130 \\
        --rounds 9

Forms. Backbones (``--variants``): ``train`` = training structure in eval mode; ``official`` = the
family's official converter imitated (``rep_backbones.fusion.official_fused``; RepGhostNet and
RepNeXt only); ``fused`` = ``rep_backbones.fuse``; ``ort`` = onnxruntime on the TorchScript export
of ``fused`` (NCHW input, ``intra_op_num_threads = --threads``). Each torch form runs in every
``--memory-format`` (``nchw``, ``channels_last``: model and input converted). Whole models
(``--forms``): ``train``, ``fused``, ``fused_whole`` (``rep_backbones.fuse(model, whole=True)``, skipped
with a note until that exists), ``ort`` (tensor mode only; exports the whole-fused model when
available); ``--modes``: ``tensor`` (backbone + neck + head raw outputs; Mask R-CNN: backbone + neck,
its RoI stage needs NMS proposals) and ``predict`` (``model.predict`` with post-processing/NMS, on a
batch made by the model's own data preprocessor).

Protocol: one process, every case built from ``torch.manual_seed(0)`` (forms share weights),
``--warmup`` calls each, then ``--rounds`` interleaved rounds of ``--iters`` calls of every case of
one model (load changes on a shared machine hit all forms alike; compare ratios within a run).
Median, p90, mean and min per case; PyTorch under ``torch.inference_mode`` with
``torch.set_num_threads(--threads)``. ``--memory``: peak memory of each case in its own subprocess
(see ``rep_backbones/benchmark/memory.py``: CPU = peak RSS over the pre-call RSS, CUDA =
``max_memory_allocated``). ``--device cuda`` adds ``--dtype float16|bfloat16`` and ``--compile
[MODE]`` (a ``fused_compiled`` variant: ``torch.compile`` of the fused model); the device, GPU name
and dtype are recorded.

Output: a markdown summary on stdout, ``<out-dir>/<name>.json`` (settings, environment, every
measurement; written atomically) and ``<out-dir>/<name>.png``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from rep_backbones import benchmark as bm
from rep_backbones.io.atomic import atomic_write, write_json
from rep_backbones.io.build import shape_tuple

# One RetinaNet per family for --train-memory (RepMobile: the S config).
DEFAULT_TRAIN_CONFIGS = ('configs/retinanet_repghost_1_0x.py', 'configs/retinanet_repghostnetv2_s.py',
                         'configs/retinanet_mobilenetv4_s.py', 'configs/retinanet_repnext_m3.py',
                         'configs/retinanet_repmobile_s.py')


# -- reporting ---------------------------------------------------------------------------------
def _ms(row: Optional[dict]) -> str:
    return f"{row['median_ms']:.2f} ({row['p90_ms']:.2f})" if row else '–'


def _ratio(x: Optional[float]) -> str:
    return f'{x:.2f}x' if x is not None else '–'


def markdown(result: dict) -> str:
    """The run as markdown tables: median ms (p90 ms in brackets) and ratios."""
    s = result['settings']
    head = (f"batch {s['batch']}, input 3x{s['shape'][0]}x{s['shape'][1]}, {s['threads']} threads, "
            f"{s['device']} {s['dtype']}; {s['rounds']} interleaved rounds x {s['iters']} calls after "
            f"{s['warmup']} warm-up; median ms (p90)")
    lines = [head, '']
    rows = result['results']
    if result['kind'] == 'backbones':
        variants = list(dict.fromkeys(r['variant'] for r in rows))
        lines += ['| model | format | ' + ' | '.join(variants) + ' | fused/official | fused/train | ort/fused | '
                  'fastest call: fused/official, fused/train | goal (median; fastest call) |',
                  '|---|---|' + '---|' * (len(variants) + 5)]
        for e in result['summary']:
            cells = [_ms(next((r for r in rows if r['model'] == e['model'] and r['variant'] == v and
                               (r['memory_format'] == e['memory_format'] or v == 'ort')), None))
                     for v in variants]
            goal = (f"{e['goal']}: {'met' if e['goal_met'] else 'NOT met'}; "
                    f"{'met' if e['goal_met_fastest'] else 'NOT met'}") if 'goal' in e else '–'
            lines.append(f"| {e['model']} | {e['memory_format']} | " + ' | '.join(cells) +
                         f" | {_ratio(e.get('fused/official'))} | {_ratio(e.get('fused/train'))} | "
                         f"{_ratio(e.get('ort/fused'))} | {_ratio(e.get('fused/official (fastest)'))}, "
                         f"{_ratio(e.get('fused/train (fastest)'))} | {goal} |")
        lines += ['', '| model | time to fuse (s) |', '|---|---|']
        lines += [f'| {m} | {t:.3f} |' for m, t in result['fuse_seconds'].items()]
    else:
        keys = [k for k in ('mode', 'part', 'memory_format') if any(k in r for r in rows)]
        mem = any('peak_mib' in r for r in rows)
        lines += ['| model | form | ' + ''.join(f'{k} | ' for k in keys) + 'median ms (p90) | vs train |'
                  + (' peak MiB | resident MiB |' if mem else ''),
                  '|---|---|' + '---|' * (len(keys) + 2 + 2 * mem)]
        for r in rows:
            lines.append(f"| {r['model']} | {r['form']} | " + ''.join(f"{r.get(k, '–')} | " for k in keys) +
                         f"{_ms(r)} | {_ratio(r.get('speedup_vs_train'))} |" +
                         (f" {r.get('peak_mib', float('nan')):.0f} | {r.get('resident_mib', float('nan')):.0f} |"
                          if mem else ''))
    if rows and 'memory_method' in rows[0]:
        lines.append(f"\npeak memory: {rows[0]['memory_method']}")
    for key, note in result['notes'].items():
        lines.append(f'\n{key}: {note}')
    return '\n'.join(lines)


def plot(result: dict, path) -> None:
    """Bar chart of median latency (whisker to p90), one group per model (and format / mode)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = result['results']
    series_key = 'variant' if result['kind'] == 'backbones' else 'form'
    group_keys = [k for k in ('memory_format', 'mode') if any(k in r for r in rows)]

    def group(r):
        return ' '.join([r['model']] + [str(r[k]) for k in group_keys if k in r])
    groups = list(dict.fromkeys(group(r) for r in rows))
    series = list(dict.fromkeys(r[series_key] for r in rows))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) + 2), 4.8))
    for i, name in enumerate(series):
        by_group = {group(r): r for r in rows if r[series_key] == name}
        xs = [j + (i - (len(series) - 1) / 2) * width for j, g in enumerate(groups) if g in by_group]
        picked = [by_group[g] for g in groups if g in by_group]
        ax.bar(xs, [r['median_ms'] for r in picked], width, label=name,
               yerr=[[0] * len(picked), [r['p90_ms'] - r['median_ms'] for r in picked]], capsize=2)
    s = result['settings']
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha='right', fontsize=7)
    ax.set_ylabel('ms per call: median (bar), p90 (whisker)')
    ax.set_title(f"{result['kind']}: batch {s['batch']}, 3x{s['shape'][0]}x{s['shape'][1]}, {s['threads']} threads, "
                 f"{s['device']} {s['dtype']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, format='png')
    plt.close(fig)


# -- CLI ---------------------------------------------------------------------------------------
def classifier_pair(text: str) -> Tuple[str, str]:
    """``'RepGhostNet:1.3x=repghostnet_130'`` -> ``('RepGhostNet:1.3x', 'repghostnet_130')``."""
    ours, sep, theirs = text.partition('=')
    if not (sep and ours and theirs):
        raise argparse.ArgumentTypeError(f'classifier pair {text!r}: expected OURS=TIMM, e.g. '
                                         'RepGhostNet:1.3x=repghostnet_130')
    return ours, theirs


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--backbone', nargs='+', metavar='NAME[:ARCH]', help='backbones, or "all" (one per family)')
    what.add_argument('--configs', nargs='+', metavar='CONFIG', help='mmdet / mmseg configs (whole models)')
    what.add_argument('--train-memory', nargs='*', metavar='CONFIG',
                      help='training cost of these detector configs (default: one RetinaNet per family)')
    parser.add_argument('--classifiers-only', action='store_true',
                        help='with --train-memory: time only the classifier pairs, no detector')
    parser.add_argument('--classifier-pairs', nargs='+', metavar='OURS=TIMM', type=classifier_pair,
                        default=list(bm.OFFICIAL_TRAIN_PAIRS),
                        help='with --train-memory: our classifier and the timm model it is timed against '
                             '(default: ' + ' '.join('='.join(p) for p in bm.OFFICIAL_TRAIN_PAIRS) + ')')
    parser.add_argument('--variants', nargs='+', choices=bm.BACKBONE_VARIANTS, default=list(bm.BACKBONE_VARIANTS),
                        help="with --backbone: the forms timed ('official': the official converter's fused form, "
                             "formerly 'upstream')")
    parser.add_argument('--memory-format', nargs='+', choices=list(bm.MEMORY_FORMATS), default=None,
                        help='default: nchw channels_last for --backbone, nchw for --configs')
    parser.add_argument('--forms', nargs='+', choices=bm.MODEL_FORMS, default=list(bm.MODEL_FORMS))
    parser.add_argument('--modes', nargs='+', choices=bm.MODEL_MODES, default=list(bm.MODEL_MODES))
    parser.add_argument('--checkpoint', default=None, help='with --configs: checkpoint (default random init)')
    parser.add_argument('--memory', action='store_true', help='peak memory of every case (one subprocess each)')
    parser.add_argument('--shape', type=int, nargs='+', default=[512, 512], metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2, help='torch and onnxruntime intra-op threads')
    parser.add_argument('--warmup', type=int, default=3, help='warm-up calls per case')
    parser.add_argument('--rounds', type=int, default=5, help='interleaved rounds')
    parser.add_argument('--iters', type=int, default=2, help='timed calls per case and round')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda[:N]'")
    parser.add_argument('--dtype', choices=list(bm.DTYPES), default='float32', help='CUDA only: half precision')
    parser.add_argument('--compile', nargs='?', const='default', default=None, metavar='MODE',
                        help='also time torch.compile(fused, mode=MODE) (meant for CUDA)')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    parser.add_argument('--name', default='benchmark', help='file stem of the JSON / PNG written')
    args = parser.parse_args(argv)
    if args.train_memory is None and (args.classifiers_only
                                      or args.classifier_pairs != list(bm.OFFICIAL_TRAIN_PAIRS)):
        parser.error('--classifiers-only and --classifier-pairs go with --train-memory')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        try:
            settings = bm.Settings(shape=shape_tuple(args.shape), batch=args.batch, threads=args.threads,
                                   device=args.device, dtype=args.dtype, warmup=args.warmup, rounds=args.rounds,
                                   iters=args.iters, compile_mode=args.compile, workdir=workdir)
        except ValueError as err:
            raise SystemExit(f'benchmark: {err}')
        if args.backbone:
            result = bm.benchmark_backbones(args.backbone, settings, args.variants,
                                            args.memory_format or ('nchw', 'channels_last'), args.memory)
        elif args.configs:
            result = bm.benchmark_models(args.configs, settings, args.forms, args.modes,
                                         args.memory_format or ('nchw',), args.memory, args.checkpoint)
        else:
            configs = () if args.classifiers_only else (args.train_memory or DEFAULT_TRAIN_CONFIGS)
            result = bm.benchmark_training(configs, settings, memory=True, classifier_pairs=args.classifier_pairs)
    result['command'] = 'python tools/benchmark.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out_dir)
    write_json(result, out / f'{args.name}.json')
    plot(result, out / f'{args.name}.png')
    print(markdown(result))
    print(f'\nwrote {out / (args.name + ".json")} and {out / (args.name + ".png")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
