#!/usr/bin/env python
"""Parameters and FLOPs (conv + linear MACs) of a backbone, classifier or whole mm model, in
training form and fused.

    # one backbone / classifier (NAME = a registered name, ARCH = a variant; default: its default)
    python tools/analysis/complexity.py --backbone RepGhostNet:1.0x --shape 224 224
    python tools/analysis/complexity.py --classifier RepGhostNet:1.0x
    # every registered family's classifier table, with the seed's figures beside ours
    python tools/analysis/complexity.py --seed-tables [--family RepGhostNet ...]
    # a whole detector / segmentor from an mm config: params of backbone / neck / heads, MACs
    python tools/analysis/complexity.py --config configs/retinanet_repghost_1_0x.py --shape 800 1333

Counting follows the seeds (``rep_backbones.analysis``): parameters = all parameters (BN affine
included); MACs = for every Conv2d output element ``C_in/groups * kh * kw``, for every Linear output
element ``in_features``; BN, activations, pooling, additions and biases are not counted. "fused" is
``rep_backbones.fuse`` (every branch and BatchNorm folded). For RepGhostNet the seed counted the
*official* deploy form (RepGhost branches fused, conv+BN pairs kept), shown as "official deploy".
The seed figures live in ``rep_backbones/seed_tables.py``; a figure such as ``142.39M`` matches
(✓) every count that rounds to it, ``4,073,604`` only itself.

Families are discovered from ``rep_backbones.models.BACKBONES`` / ``CLASSIFIERS`` at run time.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import inspect
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import rep_backbones  # noqa: E402
from rep_backbones.analysis import count_macs, count_params  # noqa: E402
from rep_backbones.models import BACKBONES, CLASSIFIERS  # noqa: E402
from rep_backbones.models.registry import default_arch  # noqa: E402
from rep_backbones.seed_tables import SEED_TABLES, matches, parse_figure, table_for  # noqa: E402


# -- helpers -----------------------------------------------------------------------------------
def _import_path(path: str):
    module, _, name = path.rpartition('.')
    return getattr(importlib.import_module(module), name)


def accepted_kwargs(cls, kwargs: Optional[dict]) -> dict:
    """The subset of ``kwargs`` that ``cls.__init__`` accepts."""
    if not kwargs:
        return {}
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


def split_spec(spec: str) -> Tuple[str, Optional[str]]:
    name, _, arch = spec.partition(':')
    return name, arch or None


def fused_copy(model: nn.Module) -> nn.Module:
    return rep_backbones.fuse(copy.deepcopy(model).eval())


def official_deploy_copy(model: nn.Module, spec: Tuple[str, str]) -> nn.Module:
    """Deep copy of ``model`` with ``fn`` applied to every module of class ``cls`` (``spec``)."""
    cls, fn = _import_path(spec[0]), _import_path(spec[1])
    out = copy.deepcopy(model).eval()
    for module in list(out.modules()):
        if isinstance(module, cls):
            fn(module)
    return out


def hw(shape) -> Tuple[int, int]:
    if isinstance(shape, int):
        return shape, shape
    shape = tuple(shape)
    return (shape[0], shape[0]) if len(shape) == 1 else (shape[0], shape[1])


# -- single models -----------------------------------------------------------------------------
def macs_consuming(model: nn.Module, shape=224) -> int:
    """``count_macs`` without the arithmetic: MACs depend on shapes only, so the model is moved to
    the ``meta`` device (its weights are dropped — the caller must own it) and run there. Falls
    back to a real CPU forward on uninitialised storage if some op has no meta kernel."""
    size = hw(shape)
    model.eval().to('meta')
    try:
        return count_macs(model, size)
    except Exception:  # noqa: BLE001 - any missing meta kernel
        model.to_empty(device='cpu')
        return count_macs(model, size)


def model_complexity(model: nn.Module, shape=224, official_deploy: Optional[Tuple[str, str]] = None,
                     consume: bool = False) -> Dict[str, int]:
    """``train_params``, ``train_macs``, ``fused_params``, ``fused_macs`` (and
    ``official_deploy_params`` / ``_macs`` when ``official_deploy`` is given) of ``model``.
    With ``consume=True`` the model's weights are dropped afterwards (it is moved to ``meta``)."""
    model.eval()
    out = dict(train_params=count_params(model))
    if official_deploy is not None:
        off = official_deploy_copy(model, official_deploy)
        out.update(official_deploy_params=count_params(off), official_deploy_macs=macs_consuming(off, shape))
        del off
    fused = fused_copy(model)
    out.update(fused_params=count_params(fused), fused_macs=macs_consuming(fused, shape))
    out['train_macs'] = macs_consuming(model if consume else copy.deepcopy(model), shape)
    return out


def backbone_complexity(name: str, arch: Optional[str] = None, shape=224, **kwargs) -> Dict[str, int]:
    arch = arch or default_arch(BACKBONES[name])
    model = rep_backbones.build_backbone(name, **({'arch': arch} if arch else {}), **kwargs)
    return model_complexity(model, shape, consume=True)


def classifier_complexity(family: str, arch: Optional[str] = None, shape=None,
                          kwargs: Optional[dict] = None) -> Dict[str, int]:
    """Counts of ``family``'s classifier (``shape`` default: the seed's resolution or 224), plus
    the seed's official deploy form and the bare backbone's training params where the seed has them."""
    cls = CLASSIFIERS[family]
    arch = arch or default_arch(cls)
    table = table_for(family) or {}
    seed_row = _seed_row(table, cls, arch) or {}
    shape = shape or seed_row.get('input', 224)
    kw = accepted_kwargs(cls, {**table.get('classifier_kwargs', {}), **(kwargs or {})})
    model = rep_backbones.build_classifier(family, **({'arch': arch} if arch else {}), **kw)
    out = model_complexity(model, shape, table.get('official_deploy'), consume=True)
    out['input'] = hw(shape)[0]
    if family in BACKBONES:
        backbone = rep_backbones.build_backbone(family, **({'arch': arch} if arch else {}))
        out['backbone_train_params'] = count_params(backbone)
        out['backbone_fused_params'] = count_params(rep_backbones.fuse(backbone.eval()))
    return out


def _seed_row(table: dict, cls, arch: Optional[str]) -> Optional[dict]:
    if not table or arch is None:
        return None
    resolve = getattr(cls, 'resolve_arch', lambda a: a)
    try:
        canonical = resolve(arch)
    except (ValueError, TypeError):
        canonical = arch
    for variant, row in table['variants'].items():
        try:
            if resolve(variant) == canonical:
                return row
        except (ValueError, TypeError):
            continue
    return None


# -- seed tables -------------------------------------------------------------------------------
COLUMNS = [  # (seed key, title, our key)
    ('train_params', 'params train', 'train_params'),
    ('official_deploy_params', 'params official deploy', 'official_deploy_params'),
    ('fused_params', 'params fused', 'fused_params'),
    ('backbone_train_params', 'backbone params train', 'backbone_train_params'),
    ('macs', 'MACs (inference form)', 'fused_macs'),
    ('readme_params', 'README params', None),
    ('readme_macs', 'README FLOPs', 'readme_macs'),
]


def _fmt_like(ours: float, seed: str) -> str:
    """Our exact count in the seed's unit/precision (one more decimal) or with thousands commas."""
    value, tol = parse_figure(seed)
    unit = seed.strip()[-1] if seed.strip()[-1] in 'KMG' else ''
    if not unit:
        return f'{int(ours):,}'
    scale = {'K': 1e3, 'M': 1e6, 'G': 1e9}[unit]
    decimals = len(seed.split('.')[1].rstrip('KMG ')) if '.' in seed else 0
    return f'{ours / scale:.{decimals + 1}f}{unit}'


def _cell(ours: Optional[float], seed: Optional[str]) -> str:
    if seed is None:
        return '–'
    if ours is None:
        return f'n/a / {seed}'
    ok = matches(ours, seed)
    value, _ = parse_figure(seed)
    mark = '✓' if ok else f'✗ ({(ours - value) / value:+.2%})'
    return f'{_fmt_like(ours, seed)} / {seed} {mark}'


def seed_table_rows(family: str, variants: Optional[Sequence[str]] = None) -> List[dict]:
    """One dict per seed variant of ``family``: our counts (``ours``), the seed figures
    (``seed``), and per figure whether they agree (``match``)."""
    table = table_for(family)
    if table is None:
        return []
    cls = CLASSIFIERS[family]
    rows = []
    for variant, seed in table['variants'].items():
        if variants and variant not in variants:
            continue
        try:
            cls.resolve_arch(variant) if hasattr(cls, 'resolve_arch') else None
        except ValueError as err:
            rows.append(dict(variant=variant, seed=seed, ours=None, match={}, error=str(err)))
            continue
        ours = classifier_complexity(family, variant, seed.get('input', 224))
        readme_form = table.get('readme_params_form', 'fused')
        ours['readme_params'] = ours.get(f'{readme_form}_params')
        ours['readme_macs'] = ours['fused_macs'] + table.get('readme_macs_offset', 0)
        match = {}
        for key, _, our_key in COLUMNS:
            if key in seed:
                val = ours.get(our_key or key)
                match[key] = matches(val, seed[key])
        rows.append(dict(variant=variant, seed=seed, ours=ours, match=match))
    return rows


def format_seed_table(family: str, rows: List[dict]) -> str:
    table = table_for(family)
    keys = [c for c in COLUMNS if any(c[0] in r['seed'] for r in rows)]
    head = ['variant', 'input'] + [f'{title} (ours / seed)' for _, title, _ in keys] + ['ours fused params']
    note = table['note'][:1].upper() + table['note'][1:]
    lines = [f'### {family}', '', f'Source: {table["source"]}. {note}.', '',
             '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        if r.get('error'):
            lines.append(f"| {r['variant']} | – | " + ' | '.join(['–'] * len(keys)) + f" | {r['error']} |")
            continue
        ours, seed = r['ours'], r['seed']
        cells = [r['variant'], str(ours['input'])]
        for key, _, our_key in keys:
            cells.append(_cell(ours.get(our_key or key), seed.get(key)))
        cells.append(f"{ours['fused_params']:,}")
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def seed_tables(families: Optional[Sequence[str]] = None, variants: Optional[Sequence[str]] = None) -> str:
    """Markdown for every registered classifier family (or ``families``) with a seed table."""
    out = []
    for family in sorted(CLASSIFIERS):
        if families and family not in families:
            continue
        if table_for(family) is None:
            out.append(f'### {family}\n\nno seed table in rep_backbones/seed_tables.py')
            continue
        out.append(format_seed_table(family, seed_table_rows(family, variants)))
    registered = {f.lower() for f in CLASSIFIERS}
    missing = [k for k, t in SEED_TABLES.items() if not any(n.lower() in registered for n in t['names'])]
    if missing and not families:
        out.append('Seed tables without a registered classifier (not compared): ' + ', '.join(missing))
    return '\n\n'.join(out)


# -- mm configs --------------------------------------------------------------------------------
def config_complexity(config: str, shape=(800, 1333), checkpoint: Optional[str] = None) -> Dict[str, object]:
    """Params of backbone / neck / heads (training form and fused) and MACs of the backbone (and
    of the whole tensor-mode forward when the model has one) at ``shape``."""
    from rep_backbones.mm.build import build_model_from_config
    model = build_model_from_config(config, checkpoint)
    size = hw(shape)

    def parts(m: nn.Module) -> Dict[str, int]:
        out = {name: count_params(child) for name, child in m.named_children()
               if name != 'data_preprocessor' and count_params(child)}
        out['total'] = count_params(m)
        return out

    res: Dict[str, object] = dict(config=config, shape=size, train=parts(model))
    fused = fused_copy(model)
    res['fused'] = parts(fused)
    for form, m in (('train', model), ('fused', fused)):
        m.to('meta')  # MACs depend on shapes only (see macs_consuming)
        res[f'{form}_backbone_macs'] = count_macs(m.backbone, size)
        total = _whole_macs(m, size)
        if total is not None:
            res[f'{form}_total_macs'] = total
    return res


def _whole_macs(model: nn.Module, size) -> Optional[int]:
    from rep_backbones.mm.build import TensorModeWrapper
    try:
        return count_macs(TensorModeWrapper(model, 'full'), size)
    except ValueError:  # two-stage detectors: no plain-tensor full forward (see TensorModeWrapper)
        return None


def format_config(res: Dict[str, object]) -> str:
    h, w = res['shape']
    names = [k for k in res['train'] if k != 'total'] + ['total']
    lines = [f"{res['config']} at {h}x{w}", '', '| part | params train | params fused |', '|---|---|---|']
    for name in names:
        lines.append(f"| {name} | {res['train'].get(name, 0):,} | {res['fused'].get(name, 0):,} |")
    lines += ['', '| MACs | train | fused |', '|---|---|---|',
              f"| backbone | {res['train_backbone_macs'] / 1e9:.3f} G | {res['fused_backbone_macs'] / 1e9:.3f} G |"]
    if 'train_total_macs' in res:
        lines.append(f"| backbone + neck + head (tensor mode) | {res['train_total_macs'] / 1e9:.3f} G | "
                     f"{res['fused_total_macs'] / 1e9:.3f} G |")
    return '\n'.join(lines)


def format_model(title: str, res: Dict[str, int], shape) -> str:
    h, w = hw(shape)
    lines = [f'{title} at {h}x{w}', '', '| form | params | MACs |', '|---|---|---|',
             f"| training | {res['train_params']:,} | {res['train_macs'] / 1e6:.2f} M |"]
    if 'official_deploy_params' in res:
        lines.append(f"| official deploy | {res['official_deploy_params']:,} | "
                     f"{res['official_deploy_macs'] / 1e6:.2f} M |")
    lines.append(f"| fused (rep_backbones.fuse) | {res['fused_params']:,} | {res['fused_macs'] / 1e6:.2f} M |")
    return '\n'.join(lines)


# -- CLI ---------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--backbone', metavar='NAME[:ARCH]', help=f'one of: {", ".join(sorted(BACKBONES))}')
    what.add_argument('--classifier', metavar='NAME[:ARCH]', help=f'one of: {", ".join(sorted(CLASSIFIERS))}')
    what.add_argument('--config', help='mmdet / mmseg config file')
    what.add_argument('--seed-tables', action='store_true', help='every family against its seed table')
    parser.add_argument('--shape', type=int, nargs='+', metavar=('H', 'W'),
                        help='input size (default 224, or 800 1333 for --config)')
    parser.add_argument('--checkpoint', help='for --config: a checkpoint to load (params do not need one)')
    parser.add_argument('--family', nargs='+', help='with --seed-tables: only these families')
    parser.add_argument('--variants', nargs='+', help='with --seed-tables: only these variants')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    if args.seed_tables:
        print(seed_tables(args.family, args.variants))
    elif args.config:
        shape = args.shape or (800, 1333)
        print(format_config(config_complexity(args.config, shape, args.checkpoint)))
    elif args.backbone:
        name, arch = split_spec(args.backbone)
        arch = arch or default_arch(BACKBONES[name])
        shape = args.shape or 224
        print(format_model(f'backbone {name} {arch or ""}', backbone_complexity(name, arch, shape), shape))
    else:
        name, arch = split_spec(args.classifier)
        arch = arch or default_arch(CLASSIFIERS[name])
        res = classifier_complexity(name, arch, args.shape)
        shape = args.shape or res['input']
        print(format_model(f'classifier {name} {arch or ""}', res, shape))
    return 0


if __name__ == '__main__':
    sys.exit(main())
