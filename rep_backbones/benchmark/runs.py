"""The three runs of ``tools/benchmark.py``, each returning the JSON-able result it writes: the family table
(:func:`benchmark_backbones`), whole detectors / segmentors (:func:`benchmark_models`) and training cost
(:func:`benchmark_training`)."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

from rep_backbones.deploy.report import environment

from .settings import BACKBONE_VARIANTS, MEMORY_FORMATS, MODEL_FORMS, MODEL_MODES, Settings, check_variants
from .tables import backbone_summary, run_table, speedups


def _recorded(settings: Settings) -> dict:
    """What every result starts with: the settings and the environment they were measured in."""
    return dict(settings=settings.public(), environment=environment(settings.threads, settings.device, settings.dtype))


def expand_backbone_specs(specs: Sequence[str]) -> List[str]:
    """``NAME[:ARCH]`` specs with the arch filled in; ``all`` = every registered backbone at its
    default arch."""
    from rep_backbones.io.build import parse_backbone_spec
    from rep_backbones.models import BACKBONES
    out = []
    for spec in specs:
        for one in (sorted(BACKBONES) if spec == 'all' else [spec]):
            cfg = parse_backbone_spec(one, fill_default=True)
            out.append(f"{cfg['type']}:{cfg['arch']}" if 'arch' in cfg else cfg['type'])
    return out


def benchmark_backbones(specs: Sequence[str], settings: Settings, variants: Sequence[str] = BACKBONE_VARIANTS,
                        memory_formats: Sequence[str] = ('nchw', 'channels_last'), memory: bool = False) -> dict:
    """The family table: every backbone in every variant x memory format (onnxruntime: NCHW only;
    ``fused_compiled`` added when ``settings.compile_mode``), interleaved per backbone."""
    for fmt in memory_formats:
        if fmt not in MEMORY_FORMATS:
            raise ValueError(f'unknown memory format {fmt!r}; expected one of {", ".join(MEMORY_FORMATS)}')
    check_variants(variants)
    torch_variants = [v for v in variants if v != 'ort'] + (['fused_compiled'] if settings.compile_mode else [])
    groups = {}
    for spec in expand_backbone_specs(specs):
        cases = {(v, fmt): dict(backbone=spec, variant=v, memory_format=fmt)
                 for fmt in memory_formats for v in torch_variants}
        if 'ort' in variants:
            cases[('ort', 'nchw')] = dict(backbone=spec, variant='ort', memory_format='nchw')
        groups[spec] = cases
    rows, notes = run_table(groups, settings, memory)
    speedups(rows, lambda r: (r['model'], r['memory_format']), 'train')
    return dict(kind='backbones', **_recorded(settings),
                fuse_seconds={r['model']: r['fuse_s'] for r in rows
                              if r['variant'] == 'fused' and r['memory_format'] == memory_formats[0]},
                summary=backbone_summary(rows), notes=notes, results=rows)


def benchmark_models(configs: Sequence[str], settings: Settings, forms: Sequence[str] = MODEL_FORMS,
                     modes: Sequence[str] = MODEL_MODES, memory_formats: Sequence[str] = ('nchw',),
                     memory: bool = False, checkpoint: Optional[str] = None) -> dict:
    """Whole detectors / segmentors: every form x mode x memory format of each config, interleaved
    per config (onnxruntime: tensor mode, NCHW). Forms that cannot run here are listed in ``notes``."""
    for f in forms:
        if f not in MODEL_FORMS:
            raise ValueError(f'unknown form {f!r}; expected one of {", ".join(MODEL_FORMS)}')
    groups = {}
    for config in configs:
        if not os.path.exists(config) and '::' not in config:
            raise FileNotFoundError(f'config {config!r} not found')
        label = os.path.splitext(os.path.basename(config.split('::')[-1]))[0]
        cases = {}
        for mode in modes:
            for fmt in memory_formats:
                for form in forms:
                    if form == 'ort' and (mode != 'tensor' or fmt != 'nchw'):
                        continue
                    cases[(form, mode, fmt)] = dict(config=config, checkpoint=checkpoint, form=form, mode=mode,
                                                    memory_format=fmt)
        groups[label] = cases
    rows, notes = run_table(groups, settings, memory)
    speedups(rows, lambda r: (r['model'], r['mode'], r['memory_format']), 'train')
    return dict(kind='models', **_recorded(settings), notes=notes, results=rows)


# Our ImageNet classifier next to timm's port of the official one (same blocks for RepGhostNet; timm's
# MobileNetV4 uses BatchNormAct2d, i.e. BN and activation in one module, where ours has BN + act).
OFFICIAL_TRAIN_PAIRS = (('RepGhostNet:1.0x', 'repghostnet_100'), ('RepGhostNet:1.3x', 'repghostnet_130'),
                        ('MobileNetV4:S', 'mobilenetv4_conv_small'))


def benchmark_training(configs: Sequence[str], settings: Settings, memory: bool = True,
                       classifier_pairs: Sequence[Tuple[str, str]] = OFFICIAL_TRAIN_PAIRS) -> dict:
    """Training step time and peak memory of each detector config with and without ``with_cp``,
    and of our classifiers next to timm's ports of the official ones (the official training form),
    interleaved per group. Each classifier is timed twice (form ``'train, repeated'``: a second, identical
    model): how far that ratio is from 1.00x is how far apart two equal training forms come out in the same
    run, the yardstick for the ours-vs-timm ratio."""
    groups = {}
    for config in configs:
        label = os.path.splitext(os.path.basename(config))[0]
        groups[label] = {(f'with_cp={cp}',): dict(config=config, with_cp=cp) for cp in (False, True)}
    for ours, theirs in classifier_pairs:   # ours twice: the repeat's ratio is the run's own noise floor
        groups[f'{ours} classifier'] = {('ours',): dict(classifier=ours), (f'timm {theirs}',): dict(timm=theirs),
                                        ('ours, repeated',): dict(classifier=ours, repeat=True)}
    rows, notes = run_table(groups, settings, memory)
    for row in rows:
        if row.pop('with_cp', False):
            row['form'] = 'with_cp'
        elif 'timm' in row:
            row['form'] = 'timm ' + row.pop('timm')
        else:
            row['form'] = 'train, repeated' if row.pop('repeat', False) else 'train'
        row.pop('classifier', None)
    speedups(rows, lambda r: (r['model'],), 'train')
    return dict(kind='training', **_recorded(settings), notes=notes, results=rows)
