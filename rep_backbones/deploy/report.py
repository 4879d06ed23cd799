"""The report card of one deployment: Markdown for people, JSON for tools (same content)."""
from __future__ import annotations

import json
import math
import os
import platform
from typing import Dict

from rep_backbones.io.atomic import PathLike, atomic_write


def environment(threads: int, device: str = 'cpu', dtype: str = 'float32') -> dict:
    """What numbers were measured with, recorded by the deploy report card and the benchmark alike: versions
    (None: not installed), the threads asked for and torch's own count, machine, load average and, on CUDA,
    the GPU."""
    import importlib.metadata as md

    import torch
    versions = {'python': platform.python_version(), 'torch': torch.__version__}   # with its build tag (+cu130)
    for package in ('onnxruntime', 'openvino', 'nncf', 'mmdet', 'mmsegmentation'):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    env = dict(versions=versions, threads=threads, torch_threads=torch.get_num_threads(), device=device, dtype=dtype,
               machine=platform.machine(), processor=platform.processor() or platform.machine(),
               cpu_count=os.cpu_count())
    try:
        env['loadavg'] = list(os.getloadavg())
    except OSError:
        pass
    if device.startswith('cuda'):
        env['gpu'] = torch.cuda.get_device_name(device)
        env['cuda'] = torch.version.cuda
    return env


def _fmt(value) -> str:
    if isinstance(value, float):
        return 'inf' if math.isinf(value) else f'{value:.4g}'
    return str(value)


def markdown(card: dict) -> str:
    """The card as Markdown: what was deployed, how close it is to fused PyTorch, and per form the task metrics
    and end-to-end latency."""
    forms: Dict[str, dict] = card['forms']
    keys = card['metric_keys']
    base = forms[next(iter(forms))]['latency']['median_ms']
    lines = [f"# Deploy report: {os.path.basename(card['config'])}", '',
             f"- artifact: `{card['artifact']}` ({card['backend']}, {card['precision']}"
             f"{', ' + card['quantizer'] if card.get('quantizer') else ''})",
             f"- checkpoint: `{card['checkpoint']}`",
             f"- stages in the backend: {card['stages']}",
             *([f"- INT8 layout of the fused backbone(s): {', '.join(card['int8_layouts'])}"]
               if card.get('int8_layouts') else []),
             f"- test set: {card['test_images']} images, the config's own evaluator; latency: image file in, "
             f"predictions out (pipeline, network, post-processing), {card['timing']['rounds']} interleaved rounds "
             f"over {card['timing']['images']} images, {card['environment']['threads']} threads", '']
    if card.get('accuracy_control'):
        ac = card['accuracy_control']
        lines += [f"- NNCF accuracy control: fp32 {_fmt(ac['fp32_metric'])}, INT8 {_fmt(ac['int8_metric'])}, drop "
                  f"{_fmt(ac['drop'])} (max {_fmt(ac['max_drop'])})", '']
    lines += ['## Deployed network vs fused PyTorch', '', '| output | shape | SQNR (dB) | max abs diff | max abs ref |',
              '|---|---|---|---|---|']
    lines += [f"| {p['name']} | {tuple(p['shape'])} | {_fmt(p['sqnr_db'])} | {_fmt(p['max_abs'])} | "
              f"{_fmt(p['max_ref'])} |" for p in card['parity']]
    lines += ['', '## Forms', '', '| form | ' + ' | '.join(keys) + ' | median ms | p90 ms | speed-up |',
              '|---|' + '---|' * (len(keys) + 3)]
    for name, form in forms.items():
        lat = form['latency']
        lines.append(f'| {name} | ' + ' | '.join(_fmt(form['metrics'].get(k)) for k in keys) +
                     f" | {lat['median_ms']:.1f} | {lat['p90_ms']:.1f} | {base / lat['median_ms']:.2f}x |")
    if card.get('selection'):
        lines += _selection(card['selection'])
    return '\n'.join(lines) + '\n'


def _selection(sel: dict) -> list:
    """Markdown lines of an ``auto`` deployment's choice: the candidates tried and why one was kept."""
    def cell(value, fmt=_fmt) -> str:
        return '—' if value is None else fmt(value)
    lines = ['', '## Candidates', '', f"Requested: --backend {sel['requested']['backend']} --precision "
             f"{sel['requested']['precision']}; bound: drop <= {_fmt(sel['max_drop'])} of the primary metric; "
             f"reference: {sel['reference']}.", '',
             '| candidate | backend | precision | quantizer | primary metric | drop | median ms | p90 ms | network ms '
             '| outcome |', '|---|---|---|---|---|---|---|---|---|---|']
    lines += [f"| {r['name']} | {r['backend']} | {r['precision']} | {cell(r['quantizer'])} | {cell(r['metric'])} | "
              f"{cell(r['drop'])} | {cell(r['median_ms'], '{:.1f}'.format)} | {cell(r['p90_ms'], '{:.1f}'.format)} | "
              f"{cell(r.get('network_ms'), '{:.1f}'.format)} | {r['status']} |" for r in sel['candidates']]
    return lines + ['', f"Chosen: **{sel['chosen']}**. {sel['reason']}."]


def write_card(card: dict, md_path: PathLike, json_path: PathLike) -> None:
    """Write ``card`` as Markdown and JSON, each atomically."""
    with atomic_write(json_path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
        json.dump(card, f, indent=2, default=float)
    with atomic_write(md_path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
        f.write(markdown(card))
