"""Reading the published complexity figures (``docs/seed_tables.yaml``) and matching counts to them.

The data file documents its own format; this module only loads and checks it, parses figures such
as ``'4,073,604'`` (exact) or ``'142.39M'`` (rounded), and says whether an exact count agrees with a
figure at the figure's precision.
"""
from __future__ import annotations

import os
import re
from typing import Dict, Optional, Tuple, Union

_UNITS = {'': 1, 'K': 1e3, 'M': 1e6, 'G': 1e9}
_FIGURE_KEYS = ('train_params', 'official_deploy_params', 'fused_params', 'backbone_train_params', 'macs',
                'readme_params', 'readme_macs')


def parse_figure(text: str) -> Tuple[float, float]:
    """``(value, tolerance)``: ``'4,073,604'`` -> (4073604, 0); ``'142.39M'`` -> (142.39e6, 0.005e6);
    ``'4.1M'`` -> (4.1e6, 0.05e6); ``'43M'`` -> (43e6, 0.5e6)."""
    m = re.fullmatch(r'\s*([\d,]+)(?:\.(\d+))?\s*([KMG]?)\s*', str(text))
    if not m:
        raise ValueError(f'bad seed figure {text!r}: expected digits with optional thousands commas, '
                         'decimals and a K/M/G unit, e.g. "4,073,604" or "142.39M"')
    whole, frac, unit = m.group(1).replace(',', ''), m.group(2) or '', m.group(3)
    scale = _UNITS[unit]
    value = float(f'{whole}.{frac}' if frac else whole) * scale
    if not unit and not frac:
        return value, 0.0
    return value, 0.5 * scale * 10 ** -len(frac)


def matches(ours: Optional[float], seed: str) -> Optional[bool]:
    """Whether our exact count agrees with the seed figure at the figure's precision (``None`` when
    we have no count)."""
    if ours is None:
        return None
    value, tol = parse_figure(seed)
    return abs(ours - value) <= tol + 1e-9 * max(value, 1.0)


def load_seed_tables(path: Union[str, os.PathLike]) -> Dict[str, dict]:
    """Label -> table, from the YAML file at ``path``; every figure is parsed once here so that a
    typo fails at load time with the file, family, variant and key in the message."""
    import yaml
    try:
        with open(path, encoding='utf-8') as f:
            tables = yaml.safe_load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f'seed tables file {path} not found (the checkout has docs/seed_tables.yaml)') from None
    if not isinstance(tables, dict):
        raise ValueError(f'{path}: expected a mapping of family label -> table, got {type(tables).__name__}')
    for label, table in tables.items():
        missing = [k for k in ('names', 'source', 'note', 'variants') if k not in (table or {})]
        if missing:
            raise ValueError(f'{path}: table {label!r} lacks {", ".join(missing)}')
        for variant, figures in table['variants'].items():
            for key, figure in figures.items():
                if key == 'input':
                    continue
                if key not in _FIGURE_KEYS:
                    raise ValueError(f'{path}: {label} {variant}: unknown key {key!r}; expected one of '
                                     f'{", ".join(_FIGURE_KEYS)} or input')
                try:
                    parse_figure(figure)
                except ValueError as err:
                    raise ValueError(f'{path}: {label} {variant} {key}: {err}') from None
    return tables


def table_for(tables: Dict[str, dict], family: str) -> Optional[dict]:
    """The table whose ``names`` include ``family`` (case-insensitive), if any."""
    for table in tables.values():
        if family.lower() in (n.lower() for n in table['names']):
            return table
    return None
