"""Parameters and MACs of backbones, classifiers and whole mm models, training form and fused, and the
comparison with the papers' published figures (each family file's ``PAPER_TABLE``), as markdown.

Counting follows the papers: parameters = all parameters (BN affine included); MACs = for every
``nn.Conv2d`` output element ``C_in / groups * kh * kw``, for every ``nn.Linear`` output element
``in_features`` (BN, activations, pooling, additions and biases are not counted), one image. "fused" is
``rep_backbones.fuse``; "official deploy" is the family's official converter
(``rep_backbones.fusion.official_fused``), what RepGhostNet's paper counted.

A paper figure is a string whose precision is explicit: ``'4,073,604'`` is exact, ``'142.39M'``,
``'0.388G'`` or ``'4.1M'`` match every count that rounds to them (half a unit of the last digit).
"""
from __future__ import annotations

import copy
import inspect
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .fusion import fuse, official_fused
from .io.build import TensorModeWrapper, build_from_spec, build_model_from_config, parse_backbone_spec, shape_tuple
from .models import BACKBONES, CLASSIFIERS, build_classifier

_UNITS = {'': 1, 'K': 1e3, 'M': 1e6, 'G': 1e9}


# -- counting ----------------------------------------------------------------------------------
def count_params(model: nn.Module) -> int:
    """All parameters (BN affine included), as ``sum(p.numel())``."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: Union[int, Sequence[int]] = 224, in_channels: int = 3) -> int:
    """Conv + linear MACs of one forward pass of a single image (batch 1) in eval mode."""
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    total = 0

    def conv_hook(module: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += out.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        model(torch.zeros(1, in_channels, *input_size, dtype=param.dtype, device=param.device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total


def macs_consuming(model: nn.Module, shape=224) -> int:
    """``count_macs`` without the arithmetic: MACs depend on shapes only, so the model is moved to
    the ``meta`` device (its weights are dropped: the caller must own it) and run there. Falls back to
    a real CPU forward on uninitialised storage if some op has no meta kernel."""
    size = shape_tuple(shape)
    model.eval().to('meta')
    try:
        return count_macs(model, size)
    except Exception:  # noqa: BLE001 - any missing meta kernel
        model.to_empty(device='cpu')
        return count_macs(model, size)


def model_complexity(model: nn.Module, shape=224, official_deploy: bool = False,
                     consume: bool = False) -> Dict[str, int]:
    """``train_params``, ``train_macs``, ``fused_params``, ``fused_macs`` (and ``official_deploy_params`` /
    ``_macs`` with ``official_deploy``) of ``model``. ``consume=True`` drops its weights afterwards."""
    model.eval()
    out = dict(train_params=count_params(model))
    if official_deploy:
        official = official_fused(model)
        out.update(official_deploy_params=count_params(official), official_deploy_macs=macs_consuming(official, shape))
        del official
    fused = fuse(copy.deepcopy(model))
    out.update(fused_params=count_params(fused), fused_macs=macs_consuming(fused, shape))
    out['train_macs'] = macs_consuming(model if consume else copy.deepcopy(model), shape)
    return out


def backbone_complexity(spec: str, shape=224) -> Dict[str, int]:
    """:func:`model_complexity` of the backbone ``NAME[:ARCH]`` (default arch when none is given)."""
    return model_complexity(build_from_spec(parse_backbone_spec(spec, fill_default=True)), shape, consume=True)


def classifier_complexity(spec: str, shape=None, kwargs: Optional[dict] = None) -> Dict[str, int]:
    """Counts of the classifier ``FAMILY[:ARCH]`` (``shape`` default: the paper's resolution or 224), with
    the paper table's classifier options and official deploy form, and the bare backbone's params."""
    cfg = parse_backbone_spec(spec, CLASSIFIERS, fill_default=True)
    family, arch = cfg['type'], cfg.get('arch')
    cls = CLASSIFIERS[family]
    table = cls.paper_table or {}
    row = _paper_row(table, cls, arch) or {}
    shape = shape or row.get('input', 224)
    kw = _accepted_kwargs(cls, {**table.get('classifier_kwargs', {}), **(kwargs or {})})
    model = build_classifier(family, **({'arch': arch} if arch else {}), **kw)
    out = model_complexity(model, shape, table.get('official_deploy', False), consume=True)
    out['input'] = shape_tuple(shape)[0]
    if family in BACKBONES:
        backbone = build_from_spec(dict(type=family, **({'arch': arch} if arch else {})))
        out['backbone_train_params'] = count_params(backbone)
        out['backbone_fused_params'] = count_params(fuse(backbone))
    return out


def _accepted_kwargs(cls, kwargs: Optional[dict]) -> dict:
    """The subset of ``kwargs`` that ``cls.__init__`` accepts."""
    if not kwargs:
        return {}
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


def _paper_row(table: dict, cls, arch: Optional[str]) -> Optional[dict]:
    """The table's row for ``arch`` (variant names compared through the class's ``resolve_arch``)."""
    if not table or arch is None:
        return None
    canonical = cls.resolve_arch(arch)
    return next((row for variant, row in table['variants'].items() if cls.resolve_arch(variant) == canonical), None)


# -- the papers' tables ------------------------------------------------------------------------
def parse_figure(text: str) -> Tuple[float, float]:
    """``(value, tolerance)``: ``'4,073,604'`` -> (4073604, 0); ``'142.39M'`` -> (142.39e6, 0.005e6);
    ``'4.1M'`` -> (4.1e6, 0.05e6); ``'43M'`` -> (43e6, 0.5e6)."""
    m = re.fullmatch(r'\s*([\d,]+)(?:\.(\d+))?\s*([KMG]?)\s*', str(text))
    if not m:
        raise ValueError(f'bad paper figure {text!r}: expected digits with optional thousands commas, '
                         'decimals and a K/M/G unit, e.g. "4,073,604" or "142.39M"')
    whole, frac, unit = m.group(1).replace(',', ''), m.group(2) or '', m.group(3)
    scale = _UNITS[unit]
    value = float(f'{whole}.{frac}' if frac else whole) * scale
    if not unit and not frac:
        return value, 0.0
    return value, 0.5 * scale * 10 ** -len(frac)


def matches(ours: Optional[float], figure: str) -> Optional[bool]:
    """Whether our exact count agrees with a paper figure at its precision (``None`` without a count)."""
    if ours is None:
        return None
    value, tol = parse_figure(figure)
    return abs(ours - value) <= tol + 1e-9 * max(value, 1.0)


def paper_tables() -> Dict[str, dict]:
    """Family -> its classifier's ``paper_table``, for every registered family that has one."""
    return {family: cls.paper_table for family, cls in CLASSIFIERS.items() if cls.paper_table}


COLUMNS = [  # (paper key, title, our key)
    ('train_params', 'params train', 'train_params'),
    ('official_deploy_params', 'params official deploy', 'official_deploy_params'),
    ('fused_params', 'params fused', 'fused_params'),
    ('backbone_train_params', 'backbone params train', 'backbone_train_params'),
    ('macs', 'MACs (inference form)', 'fused_macs'),
    ('readme_params', 'README params', None),
    ('readme_macs', 'README FLOPs', 'readme_macs'),
]


def paper_table_rows(family: str, variants: Optional[Sequence[str]] = None) -> List[dict]:
    """One dict per paper variant of ``family``: our counts (``ours``), the paper's figures (``paper``)
    and per figure whether they agree (``match``)."""
    table = CLASSIFIERS[family].paper_table
    rows = []
    for variant, paper in (table or {}).get('variants', {}).items():
        if variants and variant not in variants:
            continue
        ours = classifier_complexity(f'{family}:{variant}', paper.get('input', 224))
        ours['readme_params'] = ours.get(f"{table.get('readme_params_form', 'fused')}_params")
        ours['readme_macs'] = ours['fused_macs'] + table.get('readme_macs_offset', 0)
        match = {key: matches(ours.get(our_key or key), paper[key]) for key, _, our_key in COLUMNS if key in paper}
        rows.append(dict(variant=variant, paper=paper, ours=ours, match=match))
    return rows


def _fmt_like(ours: float, figure: str) -> str:
    """Our exact count in the figure's unit and precision (one more decimal) or with thousands commas."""
    unit = figure.strip()[-1] if figure.strip()[-1] in 'KMG' else ''
    if not unit:
        return f'{int(ours):,}'
    decimals = len(figure.split('.')[1].rstrip('KMG ')) if '.' in figure else 0
    return f'{ours / _UNITS[unit]:.{decimals + 1}f}{unit}'


def _cell(ours: Optional[float], figure: Optional[str]) -> str:
    if figure is None:
        return '–'
    if ours is None:
        return f'n/a / {figure}'
    value, _ = parse_figure(figure)
    mark = '✓' if matches(ours, figure) else f'✗ ({(ours - value) / value:+.2%})'
    return f'{_fmt_like(ours, figure)} / {figure} {mark}'


def format_paper_table(family: str, rows: List[dict]) -> str:
    """Markdown section for ``family``: source, note, and one line per row of :func:`paper_table_rows`."""
    table = CLASSIFIERS[family].paper_table
    keys = [c for c in COLUMNS if any(c[0] in r['paper'] for r in rows)]
    head = ['variant', 'input'] + [f'{title} (ours / paper)' for _, title, _ in keys] + ['ours fused params']
    note = table['note'][:1].upper() + table['note'][1:]
    lines = [f'### {family}', '', f'Source: {table["source"]}. {note}.', '',
             '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        ours, paper = r['ours'], r['paper']
        cells = [r['variant'], str(ours['input'])]
        cells += [_cell(ours.get(our_key or key), paper.get(key)) for key, _, our_key in keys]
        cells.append(f"{ours['fused_params']:,}")
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def paper_tables_markdown(families: Optional[Sequence[str]] = None, variants: Optional[Sequence[str]] = None) -> str:
    """Markdown for every registered classifier family (or ``families``) against its paper table."""
    unknown = sorted(set(families or ()) - set(CLASSIFIERS))
    if unknown:
        raise ValueError(f'unknown classifier families {unknown}; registered: {", ".join(sorted(CLASSIFIERS))}')
    out = []
    for family in sorted(CLASSIFIERS):
        if families and family not in families:
            continue
        if not CLASSIFIERS[family].paper_table:
            out.append(f'### {family}\n\nno paper table for {family}')
            continue
        out.append(format_paper_table(family, paper_table_rows(family, variants)))
    return '\n\n'.join(out)


# -- mm configs --------------------------------------------------------------------------------
def config_complexity(config: str, shape=(800, 1333), checkpoint: Optional[str] = None) -> Dict[str, object]:
    """Params of backbone / neck / heads (training form and fused) and MACs of the backbone (and of the
    whole tensor-mode forward when the model has one) at ``shape``."""
    model = build_model_from_config(config, checkpoint)
    size = shape_tuple(shape)

    def parts(m: nn.Module) -> Dict[str, int]:
        out = {name: count_params(child) for name, child in m.named_children()
               if name != 'data_preprocessor' and count_params(child)}
        out['total'] = count_params(m)
        return out

    res: Dict[str, object] = dict(config=config, shape=size, train=parts(model))
    fused = fuse(copy.deepcopy(model))
    res['fused'] = parts(fused)
    for form, m in (('train', model), ('fused', fused)):
        m.to('meta')  # MACs depend on shapes only (see macs_consuming)
        res[f'{form}_backbone_macs'] = count_macs(m.backbone, size)
        try:
            res[f'{form}_total_macs'] = count_macs(TensorModeWrapper(m, 'full'), size)
        except ValueError:  # two-stage detectors: no plain-tensor full forward (see TensorModeWrapper)
            pass
    return res


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
