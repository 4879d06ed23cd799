"""The tool picks: every (runtime, quantizer, precision) candidate deployed, scored and timed in one run, and the
fastest one within the accuracy bound kept (``tools/deploy.py --backend auto`` and / or ``--precision auto``).

Candidates, as far as a fixed ``--backend`` / ``--precision`` allows:

* ``onnxruntime fp32``, ``openvino fp32``: the exported fp32 graph;
* ``onnxruntime INT8 (QDQ)``: onnxruntime's ``quantize_static`` graph;
* ``openvino INT8 (QDQ)``: the same QDQ graph run by OpenVINO (it fuses the QDQ pairs into int8 kernels);
* ``openvino INT8 (NNCF)``: ``nncf.quantize``; with ``--max-drop`` given, NNCF's accuracy control with that bound
  (a bound it cannot reach rejects this candidate, with the best drop it reached, instead of failing the run).

Reference: the drop of a candidate is the primary metric (bbox mAP, mask mAP, mIoU / 100) of the fp32 graph on
the *same runtime* minus the candidate's own, both with the config's evaluator on the test set. An fp32
candidate's drop is therefore 0 by definition, and it meets every bound >= 0; a negative bound is refused. The
chosen candidate is the one with the smallest median end-to-end latency among those with drop <= max_drop (all
forms timed interleaved in one run). With ``--precision int8`` the fp32 graphs are deployed as references only;
when no INT8 candidate meets the bound the run fails with :class:`~.quantize.AccuracyTargetError`.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from typing import List, Optional, Tuple

import torch

from rep_backbones.io.atomic import atomic_directory

from . import forms, quantize
from .export import export_onnx
from .pipeline import DeployOptions, Prepared, artifact_name, calibration_set, prepare, quantize_int8, score_and_time
from .report import environment, write_card
from .runtimes import BACKENDS, Session
from .timing import interleaved, summarize
from .verify import parity

DEFAULT_MAX_DROP = 0.01     # absolute drop of the primary metric: 1 mAP point
ARTIFACTS = {'fp32': ['model.onnx'], 'QDQ': ['model.int8.onnx'], 'NNCF': ['model.xml', 'model.bin']}


def candidate_specs(backend: str, precision: str) -> List[Tuple[str, str, Optional[str]]]:
    """``(backend, precision, quantizer)`` of every form deployed for ``backend`` / ``precision`` (``auto``
    allowed): the fp32 graph on each runtime (candidate or reference), then the INT8 candidates."""
    backends = BACKENDS if backend == 'auto' else (backend,)
    rows = [(b, 'fp32', None) for b in backends]
    if precision != 'fp32':
        rows += [(b, 'int8', 'QDQ') for b in backends] + ([('openvino', 'int8', 'NNCF')] if 'openvino' in backends
                                                          else [])
    return rows


def form_name(backend: str, precision: str, quantizer: Optional[str]) -> str:
    return f'{backend} fp32' if precision == 'fp32' else f'{backend} INT8 ({quantizer})'


def choose(rows: List[dict], max_drop: float) -> Tuple[dict, str]:
    """Mark each row (``name``, ``precision``, ``candidate``, ``drop``, ``median_ms``; ``drop`` None = failed,
    its ``status`` set already) with its ``status`` and return ``(chosen row, reason)``: the fastest candidate
    with ``drop <= max_drop``. Raises :class:`~.quantize.AccuracyTargetError` when no candidate is admissible
    (possible only without fp32 candidates: their drop is 0)."""
    admissible = [r for r in rows if r['candidate'] and r['drop'] is not None and r['drop'] <= max_drop]
    int8 = [r for r in rows if r['precision'] == 'int8']
    measured = [r['drop'] for r in int8 if r['drop'] is not None]
    best_drop = min(measured, default=float('inf'))
    if not admissible:
        drops = ', '.join(f"{r['name']} {r['drop']:.4f}" for r in int8 if r['drop'] is not None) or 'none measured'
        raise quantize.AccuracyTargetError(
            f'INT8 cannot meet --max-drop {max_drop}: no candidate is within the bound (drops: {drops})', best_drop)
    chosen = min(admissible, key=lambda r: r['median_ms'])
    for r in rows:
        if r is chosen:
            r['status'] = 'chosen'
        elif not r['candidate']:
            r['status'] = 'reference for the drop (not a candidate: --precision int8)'
        elif r['drop'] is None:
            continue
        elif r['drop'] > max_drop:
            r['status'] = f'rejected: drop {r["drop"]:.4f} > {max_drop}'
        else:
            r['status'] = f'within the bound, slower ({r["median_ms"]:.1f} ms vs {chosen["median_ms"]:.1f} ms)'
    reason = (f'{chosen["name"]} is the fastest of the {len(admissible)} candidate(s) within the bound (drop '
              f'{chosen["drop"]:.4f} <= {max_drop}; median {chosen["median_ms"]:.1f} ms)')
    if chosen['precision'] == 'fp32' and int8 and not any(r['precision'] == 'int8' for r in admissible):
        reason += (f'; no INT8 candidate met the bound (smallest drop {best_drop:.4f}), so fp32 is chosen'
                   if measured else '; no INT8 candidate could be measured, so fp32 is chosen')
    return chosen, reason


def _deploy_candidates(p: Prepared, specs, fp32_path: str, scratch: str, options: DeployOptions):
    """Sessions of every candidate in ``specs`` (files in ``scratch``): ``(name -> Session, rows, quantizer ->
    its card fields)``. NNCF's accuracy control failing to meet the bound rejects its row (no session)."""
    calibration = calibration_set(p.model, options) if any(s[1] == 'int8' for s in specs) else None
    sessions, rows, extra = {}, [], {}
    for backend, precision, quantizer in specs:
        name = form_name(backend, precision, quantizer)
        row = dict(name=name, backend=backend, precision=precision, quantizer=quantizer,
                   candidate=options.precision != 'int8' or precision == 'int8', metric=None, drop=None,
                   median_ms=None, p90_ms=None, network_ms=None, status=None)
        rows.append(row)
        if precision == 'fp32':
            sessions[name] = Session(backend, fp32_path, options.threads)
        elif quantizer == 'QDQ':
            qdq = os.path.join(scratch, 'model.int8.onnx')
            if not os.path.exists(qdq):          # one QDQ graph (and its onnxruntime session), run by each runtime
                _, ort_qdq, extra['QDQ'] = quantize_int8(p.model, fp32_path, scratch, p.dataset, p.batches,
                                                         dataclasses.replace(options, backend='onnxruntime'), {},
                                                         calibration)
            sessions[name] = ort_qdq if backend == 'onnxruntime' else Session(backend, qdq, options.threads)
        else:
            try:
                _, sessions[name], extra['NNCF'] = quantize_int8(p.model, fp32_path, scratch, p.dataset, p.batches,
                                                                 dataclasses.replace(options, backend='openvino'), {},
                                                                 calibration)
            except quantize.AccuracyTargetError as err:
                row['status'] = f'rejected: NNCF accuracy control reached a drop of {err.best_drop:.4f} at best'
    return sessions, rows, extra


def deploy_auto(config: str, checkpoint: Optional[str], work_dir: str, options: DeployOptions,
                cfg_options: Optional[dict] = None) -> dict:
    """Deploy every candidate of ``options.backend`` / ``options.precision`` (``auto`` in either), score and
    time them with the training form and fused PyTorch, and write only the chosen artifact and the card (with
    ``selection``: bound, reference, one row per candidate, the reason) into ``work_dir/<config>_<backend>_
    <precision>/``, atomically. Returns the card."""
    max_drop = DEFAULT_MAX_DROP if options.max_drop is None else options.max_drop
    if max_drop < 0:
        raise ValueError(f'--max-drop {max_drop} < 0: the fp32 candidates are the reference (drop 0 by definition), '
                         'so a negative bound would reject every candidate; give a bound >= 0')
    specs = candidate_specs(options.backend, options.precision)
    p = prepare(config, checkpoint, options, cfg_options, int8=any(s[1] == 'int8' for s in specs))
    with atomic_directory(os.path.join(work_dir, artifact_name(config, options))) as out:
        scratch = os.path.join(out, 'candidates')
        os.makedirs(scratch)
        fp32_path = os.path.join(scratch, 'model.onnx')
        export_onnx(p.network, torch.from_numpy(p.inputs[0]), fp32_path)
        sessions, rows, extra = _deploy_candidates(p, specs, fp32_path, scratch, options)
        card = dict(config=config, checkpoint=checkpoint, stages=forms.BACKEND_STAGES[forms.kind(p.model)],
                    int8_layouts=p.layouts, environment=environment(options.threads))
        score_and_time(p, sessions, options, card)
        # the network alone (the graph on one test input, no pre- / post-processing), interleaved as well:
        # what INT8 changes, apart from the PyTorch steps around it
        network = interleaved({name: (lambda s=s: s.run(p.inputs[0])) for name, s in sessions.items()},
                              options.rounds, options.time_n)
        for row in rows:
            if row['name'] in sessions:
                form = card['forms'][row['name']]
                row.update(metric=form['primary'], median_ms=form['latency']['median_ms'],
                           p90_ms=form['latency']['p90_ms'], network_ms=summarize(network[row['name']])['median_ms'],
                           drop=card['forms'][f'{row["backend"]} fp32']['primary'] - form['primary'])
        chosen, reason = choose(rows, max_drop)
        files = ARTIFACTS[chosen['quantizer'] or 'fp32']
        for f in files:
            os.replace(os.path.join(scratch, f), os.path.join(out, f))
        shutil.rmtree(scratch)
        quantizer = extra.get(chosen['quantizer'], {})
        card.update(backend=chosen['backend'], precision=chosen['precision'], artifact=files[0],
                    quantizer=quantizer.get('quantizer'), accuracy_control=quantizer.get('accuracy_control'),
                    parity=[dataclasses.asdict(r) for r in parity(p.network, sessions[chosen['name']], p.inputs)],
                    selection=dict(requested=dict(backend=options.backend, precision=options.precision),
                                   max_drop=max_drop, reference='the fp32 graph on the same runtime (its drop is 0)',
                                   candidates=rows, chosen=chosen['name'], reason=reason))
        write_card(card, os.path.join(out, 'report.md'), os.path.join(out, 'report.json'))
    return card
