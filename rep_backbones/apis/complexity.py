"""Parameters and MACs of backbones, classifiers and whole mm models, training form and fused, and
the comparison with the published figures (``docs/seed_tables.yaml``), as markdown.

Counting follows the seeds (``rep_backbones.analysis``): parameters = all parameters (BN affine
included); MACs = for every Conv2d output element ``C_in/groups * kh * kw``, for every Linear output
element ``in_features``. "fused" is ``rep_backbones.fuse``. For RepGhostNet the seed counted the
*official* deploy form (RepGhost branches fused, conv+BN pairs kept): the table's
``official_deploy`` entry rebuilds that form, shown as "official deploy".
"""
from __future__ import annotations

import copy
import importlib
import inspect
from typing import Dict, List, Optional, Sequence, Tuple

from torch import nn

import rep_backbones
from rep_backbones.analysis import count_macs, count_params
from rep_backbones.models import BACKBONES, CLASSIFIERS

from .build import TensorModeWrapper, build_from_spec, build_model_from_config, parse_backbone_spec, shape_tuple
from .seed_tables import matches, parse_figure, table_for


def _import_path(path: str):
    module, _, name = path.rpartition('.')
    return getattr(importlib.import_module(module), name)


def _accepted_kwargs(cls, kwargs: Optional[dict]) -> dict:
    """The subset of ``kwargs`` that ``cls.__init__`` accepts (a table's ``classifier_kwargs`` apply
    only to families whose classifier has those options)."""
    if not kwargs:
        return {}
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


def _official_deploy_copy(model: nn.Module, spec: Sequence[str]) -> nn.Module:
    """Deep copy of ``model`` with function ``spec[1]`` applied to every module of class ``spec[0]``
    (both dotted import paths)."""
    cls, fn = _import_path(spec[0]), _import_path(spec[1])
    out = copy.deepcopy(model).eval()
    for module in list(out.modules()):
        if isinstance(module, cls):
            fn(module)
    return out


def macs_consuming(model: nn.Module, shape=224) -> int:
    """``count_macs`` without the arithmetic: MACs depend on shapes only, so the model is moved to
    the ``meta`` device (its weights are dropped — the caller must own it) and run there. Falls
    back to a real CPU forward on uninitialised storage if some op has no meta kernel."""
    size = shape_tuple(shape)
    model.eval().to('meta')
    try:
        return count_macs(model, size)
    except Exception:  # noqa: BLE001 - any missing meta kernel
        model.to_empty(device='cpu')
        return count_macs(model, size)


def model_complexity(model: nn.Module, shape=224, official_deploy: Optional[Sequence[str]] = None,
                     consume: bool = False) -> Dict[str, int]:
    """``train_params``, ``train_macs``, ``fused_params``, ``fused_macs`` (and
    ``official_deploy_params`` / ``_macs`` when ``official_deploy`` is given) of ``model``.
    With ``consume=True`` the model's weights are dropped afterwards (it is moved to ``meta``)."""
    model.eval()
    out = dict(train_params=count_params(model))
    if official_deploy is not None:
        off = _official_deploy_copy(model, official_deploy)
        out.update(official_deploy_params=count_params(off), official_deploy_macs=macs_consuming(off, shape))
        del off
    fused = rep_backbones.fuse(copy.deepcopy(model))
    out.update(fused_params=count_params(fused), fused_macs=macs_consuming(fused, shape))
    out['train_macs'] = macs_consuming(model if consume else copy.deepcopy(model), shape)
    return out


def backbone_complexity(spec: str, shape=224) -> Dict[str, int]:
    """:func:`model_complexity` of the backbone ``NAME[:ARCH]`` (default arch when none is given)."""
    return model_complexity(build_from_spec(parse_backbone_spec(spec, fill_default=True)), shape, consume=True)


def _seed_row(table: dict, cls, arch: Optional[str]) -> Optional[dict]:
    """The table's row for ``arch`` (variant names compared through the class's ``resolve_arch``)."""
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


def classifier_complexity(spec: str, shape=None, tables: Optional[Dict[str, dict]] = None,
                          kwargs: Optional[dict] = None) -> Dict[str, int]:
    """Counts of the classifier ``FAMILY[:ARCH]`` (``shape`` default: the seed's resolution or 224),
    plus the seed's official deploy form and the bare backbone's params where ``tables`` (from
    :func:`~rep_backbones.apis.seed_tables.load_seed_tables`) has a table for the family."""
    cfg = parse_backbone_spec(spec, CLASSIFIERS, fill_default=True)
    family, arch = cfg['type'], cfg.get('arch')
    cls = CLASSIFIERS[family]
    table = table_for(tables or {}, family) or {}
    seed_row = _seed_row(table, cls, arch) or {}
    shape = shape or seed_row.get('input', 224)
    kw = _accepted_kwargs(cls, {**table.get('classifier_kwargs', {}), **(kwargs or {})})
    model = rep_backbones.build_classifier(family, **({'arch': arch} if arch else {}), **kw)
    out = model_complexity(model, shape, table.get('official_deploy'), consume=True)
    out['input'] = shape_tuple(shape)[0]
    if family in BACKBONES:
        backbone = build_from_spec(dict(type=family, **({'arch': arch} if arch else {})))
        out['backbone_train_params'] = count_params(backbone)
        out['backbone_fused_params'] = count_params(rep_backbones.fuse(backbone))
    return out


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
    value, _ = parse_figure(seed)
    mark = '✓' if matches(ours, seed) else f'✗ ({(ours - value) / value:+.2%})'
    return f'{_fmt_like(ours, seed)} / {seed} {mark}'


def seed_table_rows(tables: Dict[str, dict], family: str, variants: Optional[Sequence[str]] = None) -> List[dict]:
    """One dict per seed variant of ``family``: our counts (``ours``), the seed figures
    (``seed``), and per figure whether they agree (``match``); a variant our class does not know
    gives a row with ``error``."""
    table = table_for(tables, family)
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
        ours = classifier_complexity(f'{family}:{variant}', seed.get('input', 224), tables)
        ours['readme_params'] = ours.get(f"{table.get('readme_params_form', 'fused')}_params")
        ours['readme_macs'] = ours['fused_macs'] + table.get('readme_macs_offset', 0)
        match = {key: matches(ours.get(our_key or key), seed[key]) for key, _, our_key in COLUMNS if key in seed}
        rows.append(dict(variant=variant, seed=seed, ours=ours, match=match))
    return rows


def format_seed_table(tables: Dict[str, dict], family: str, rows: List[dict]) -> str:
    """Markdown section for ``family``: source, note, and one line per row of :func:`seed_table_rows`."""
    table = table_for(tables, family)
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
        cells += [_cell(ours.get(our_key or key), seed.get(key)) for key, _, our_key in keys]
        cells.append(f"{ours['fused_params']:,}")
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def seed_tables_markdown(tables: Dict[str, dict], families: Optional[Sequence[str]] = None,
                         variants: Optional[Sequence[str]] = None) -> str:
    """Markdown for every registered classifier family (or ``families``) against ``tables``."""
    unknown = sorted(set(families or ()) - set(CLASSIFIERS))
    if unknown:
        raise ValueError(f'unknown classifier families {unknown}; registered: {", ".join(sorted(CLASSIFIERS))}')
    out = []
    for family in sorted(CLASSIFIERS):
        if families and family not in families:
            continue
        if table_for(tables, family) is None:
            out.append(f'### {family}\n\nno seed table for {family}')
            continue
        out.append(format_seed_table(tables, family, seed_table_rows(tables, family, variants)))
    registered = {f.lower() for f in CLASSIFIERS}
    missing = [k for k, t in tables.items() if not any(n.lower() in registered for n in t['names'])]
    if missing and not families:
        out.append('Seed tables without a registered classifier (not compared): ' + ', '.join(missing))
    return '\n\n'.join(out)


# -- mm configs --------------------------------------------------------------------------------
def config_complexity(config: str, shape=(800, 1333), checkpoint: Optional[str] = None) -> Dict[str, object]:
    """Params of backbone / neck / heads (training form and fused) and MACs of the backbone (and
    of the whole tensor-mode forward when the model has one) at ``shape``."""
    model = build_model_from_config(config, checkpoint)
    size = shape_tuple(shape)

    def parts(m: nn.Module) -> Dict[str, int]:
        out = {name: count_params(child) for name, child in m.named_children()
               if name != 'data_preprocessor' and count_params(child)}
        out['total'] = count_params(m)
        return out

    res: Dict[str, object] = dict(config=config, shape=size, train=parts(model))
    fused = rep_backbones.fuse(copy.deepcopy(model))
    res['fused'] = parts(fused)
    for form, m in (('train', model), ('fused', fused)):
        m.to('meta')  # MACs depend on shapes only (see macs_consuming)
        res[f'{form}_backbone_macs'] = count_macs(m.backbone, size)
        total = _whole_macs(m, size)
        if total is not None:
            res[f'{form}_total_macs'] = total
    return res


def _whole_macs(model: nn.Module, size: Tuple[int, int]) -> Optional[int]:
    try:
        return count_macs(TensorModeWrapper(model, 'full'), size)
    except ValueError:  # two-stage detectors: no plain-tensor full forward (see TensorModeWrapper)
        return None


def format_config(res: Dict[str, object]) -> str:
    """Markdown of :func:`config_complexity`'s result."""
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
    """Markdown of :func:`model_complexity`'s result."""
    h, w = shape_tuple(shape)
    lines = [f'{title} at {h}x{w}', '', '| form | params | MACs |', '|---|---|---|',
             f"| training | {res['train_params']:,} | {res['train_macs'] / 1e6:.2f} M |"]
    if 'official_deploy_params' in res:
        lines.append(f"| official deploy | {res['official_deploy_params']:,} | "
                     f"{res['official_deploy_macs'] / 1e6:.2f} M |")
    lines.append(f"| fused (rep_backbones.fuse) | {res['fused_params']:,} | {res['fused_macs'] / 1e6:.2f} M |")
    return '\n'.join(lines)
