"""A table: groups of cases built and timed in **interleaved rounds** in one process (each round runs
every case of a group ``iters`` times in turn, so load changes on a shared machine hit all forms alike),
after ``warmup`` calls each; medians and p90 per case, speed-ups, and the family table's summary."""
from __future__ import annotations

import sys
from typing import Callable, Dict, List, Tuple

from rep_backbones.deploy.timing import interleaved, summarize

from .cases import build_case
from .memory import measure_memory_in_subprocess
from .settings import GOAL_VS_OFFICIAL, GOAL_VS_TRAIN, Settings


def run_table(groups: Dict[str, Dict[tuple, dict]], settings: Settings,
               memory: bool) -> Tuple[List[dict], Dict[str, str]]:
    """Build and time each group's cases (interleaved within a group); one row per measured case
    with the case's fields, its timing summary, its build info and (``memory``) its peak memory."""
    rows, notes = [], {}
    for label, cases in groups.items():
        built = {}
        for key, case in cases.items():
            try:    # a form that cannot be built or run here is reported, the rest of the run goes on
                result = build_case(case, settings)
                if result.fn is not None:
                    result.fn()
            except Exception as err:  # noqa: BLE001  (anything a model raises: recorded in the JSON)
                notes[f'{label} {"/".join(map(str, key))}'] = f'failed: {type(err).__name__}: {err}'
                print(f'benchmark: {label} {key}: {type(err).__name__}: {err}', file=sys.stderr)
                continue
            if result.fn is None:
                notes[f'{label} {key[0]}'] = result.info['skipped']
            else:
                built[key] = result
        times = interleaved({k: b.fn for k, b in built.items()}, settings.rounds, settings.iters, settings.warmup,
                            settings.device)
        for key, result in built.items():
            row = dict(model=label, **{k: v for k, v in cases[key].items() if k not in ('backbone', 'config')},
                       **summarize(times[key], settings.batch), **result.info)
            if memory:
                try:
                    row.update(measure_memory_in_subprocess(cases[key], settings))
                except RuntimeError as err:
                    notes[f'{label} {"/".join(map(str, key))} memory'] = str(err)[-500:]
            rows.append(row)
        del built
    return rows, notes


def speedups(rows: List[dict], base_key: Callable[[dict], tuple], base_name: str) -> None:
    """``speedup_vs_<base>`` = base median / row median, for rows sharing ``base_key``."""
    bases = {base_key(r): r['median_ms'] for r in rows if r.get('variant', r.get('form')) == base_name}
    for r in rows:
        base = bases.get(base_key(r))
        if base:
            r[f'speedup_vs_{base_name}'] = base / r['median_ms']


def backbone_summary(rows: List[dict]) -> List[dict]:
    """Per backbone and memory format: median ms of each variant, the time ratios ``fused/official``,
    ``fused/train``, ``ort/fused``, ``compiled/fused`` (< 1: the numerator is faster), and the family goal
    with whether this run met it. The goal's two ratios are also given from each form's fastest call
    (``... (fastest)``, ``goal_met_fastest``): on a machine shared with other work, interference only ever
    adds time, so where median and fastest call disagree the run cannot tell."""
    out = []
    for model in dict.fromkeys(r['model'] for r in rows):
        mine = [r for r in rows if r['model'] == model]
        ort = next((r['median_ms'] for r in mine if r['variant'] == 'ort'), None)
        for fmt in dict.fromkeys(r['memory_format'] for r in mine if r['variant'] != 'ort'):
            ms = {r['variant']: r['median_ms'] for r in mine if r['memory_format'] == fmt}
            fastest = {r['variant']: r['min_ms'] for r in mine if r['memory_format'] == fmt}
            entry = dict(model=model, memory_format=fmt, median_ms=ms)
            if 'fused' in ms:
                if 'train' in ms:
                    entry['fused/train'] = ms['fused'] / ms['train']
                    entry['fused/train (fastest)'] = fastest['fused'] / fastest['train']
                if 'official' in ms:
                    entry['fused/official'] = ms['fused'] / ms['official']
                    entry['fused/official (fastest)'] = fastest['fused'] / fastest['official']
                    entry['goal'] = f'fused/official <= {GOAL_VS_OFFICIAL}'
                    entry['goal_met'] = entry['fused/official'] <= GOAL_VS_OFFICIAL
                    entry['goal_met_fastest'] = entry['fused/official (fastest)'] <= GOAL_VS_OFFICIAL
                elif 'train' in ms:
                    entry['goal'] = f'train/fused >= {GOAL_VS_TRAIN}'
                    entry['goal_met'] = ms['train'] / ms['fused'] >= GOAL_VS_TRAIN
                    entry['goal_met_fastest'] = fastest['train'] / fastest['fused'] >= GOAL_VS_TRAIN
                if ort is not None:
                    entry['ort/fused'] = ort / ms['fused']
                if 'fused_compiled' in ms:
                    entry['compiled/fused'] = ms['fused_compiled'] / ms['fused']
            out.append(entry)
    return out
