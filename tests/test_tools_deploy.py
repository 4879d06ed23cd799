"""Deployment tools: ONNX export + onnxruntime parity (every registered family, whole RetinaNet and
Semantic FPN), complexity figures against the seed tables, and a tiny benchmark run.

Kept fast: smallest variant per family, small odd inputs, random weights with random BN statistics
(so a folding mistake cannot hide behind the default statistics).
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import rep_backbones
from rep_backbones.models import BACKBONES, CLASSIFIERS
from rep_backbones.seed_tables import matches, parse_figure, table_for

from .helpers import count_norms, randomize_bn

ROOT = Path(__file__).resolve().parents[1]
SMALL_ODD = (67, 93)          # backbone-only exports (stride 32 still gives a 3x3 map)
DET_ODD = (131, 197)          # whole models (RetinaNet's P7 is stride 128)
RETINANET = ROOT / 'configs' / 'retinanet_repghost_1_0x.py'
SEMFPN = ROOT / 'configs' / 'fpn_repghost_1_0x_ade20k_40k.py'


def _load_tool(rel: str, name: str):
    path = ROOT / rel
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


export_onnx = _load_tool('tools/export_onnx.py', 'export_onnx')
complexity = _load_tool('tools/analysis/complexity.py', 'complexity')
benchmark_tool = _load_tool('tools/benchmark.py', 'benchmark_tool')


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 spinning OpenMP threads per process can
    make a forward pass 10-100x slower when other processes compete for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _export_and_check(module, reference, x, path, **kw):
    """Export ``module`` (fused), run onnxruntime on ``x``; returns (rel diff vs ``reference``,
    operator counts, the onnxruntime session)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        export_onnx.export(module, x, path, **kw)
    session = export_onnx.ort_session(path, threads=1)
    _, rel = export_onnx.compare(reference, path, x, session)
    return rel, export_onnx.op_counts(path), session


# -- backbone-only, every registered family ----------------------------------------------------
@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_backbone_onnx_parity(name, tmp_path):
    cls = BACKBONES[name]
    arch = next(iter(cls.arch_settings))          # the first (usually smallest) variant
    model = randomize_bn(rep_backbones.build_backbone(name, arch=arch)).eval()
    fused = rep_backbones.fuse(copy.deepcopy(model))
    assert count_norms(fused) == 0
    torch.manual_seed(0)
    x = torch.randn(1, 3, *SMALL_ODD)
    # parity of the export (onnxruntime vs the fused PyTorch model it was traced from); fused vs
    # training form is each family's own test (tests/test_<family>.py)
    rel, counts, session = _export_and_check(fused, fused, x, tmp_path / f'{name}.onnx', dynamic_batch=True,
                                             dynamic_size=True)
    assert rel <= 1e-4, f'{name} {arch}: onnxruntime vs PyTorch (fused) relative diff {rel:.3g}'
    assert counts.get('BatchNormalization', 0) == 0, counts
    assert counts.get('Conv', 0) > 0
    # dynamic axes: another batch and size through the same file
    x2 = torch.randn(2, 3, SMALL_ODD[0] + 32, SMALL_ODD[1] - 26)
    _, rel2 = export_onnx.compare(fused, tmp_path / f'{name}.onnx', x2, session)
    assert rel2 <= 1e-4


def test_export_cli_backbone_spec(tmp_path):
    out = tmp_path / 'rg.onnx'
    assert export_onnx.main(['RepGhostNet:0.5x', 'none', '--out', str(out), '--backbone-only',
                             '--shape', '65', '97']) == 0
    assert out.is_file()


# -- whole models from the configs -------------------------------------------------------------
def _mm_ready(config: Path, package: str) -> None:
    if not config.is_file():
        pytest.skip(f'{config.relative_to(ROOT)} is missing')
    try:
        import mmcv.ops  # noqa: F401  (mmdet/mmseg models import compiled ops)
        importlib.import_module(package)
    except Exception as err:  # noqa: BLE001
        pytest.skip(f'mmcv with compiled ops / {package} not importable here: {err}')


@pytest.mark.parametrize('config,package,n_outputs', [(RETINANET, 'mmdet', 10), (SEMFPN, 'mmseg', 1)],
                         ids=['retinanet', 'semantic_fpn'])
def test_whole_model_onnx(config, package, n_outputs, tmp_path):
    _mm_ready(config, package)
    from rep_backbones.mm.build import TensorModeWrapper, build_model_from_config
    model = build_model_from_config(str(config), 'none')
    randomize_bn(model)
    reference = TensorModeWrapper(model, 'full').eval()
    fused_model = rep_backbones.fuse(copy.deepcopy(model))
    assert count_norms(fused_model.backbone) == 0
    fused = TensorModeWrapper(fused_model, 'full').eval()
    torch.manual_seed(0)
    x = torch.randn(1, 3, *DET_ODD)
    rel, counts, _ = _export_and_check(fused, reference, x, tmp_path / 'model.onnx')
    assert rel <= 1e-4, f'{config.name}: relative diff {rel:.3g}'
    assert counts.get('BatchNormalization', 0) == 0, counts
    import onnx
    assert len(onnx.load(str(tmp_path / 'model.onnx')).graph.output) == n_outputs


# -- complexity vs seed tables -----------------------------------------------------------------
def test_repghost_complexity_against_seed():
    res = complexity.classifier_complexity('RepGhostNet', '1.0x')
    assert res['train_params'] == 4_073_604
    assert res['official_deploy_params'] == 4_058_772        # what the seed counted (4.1 M)
    assert res['fused_params'] == 4_051_648                  # ours: conv+BN folded too
    assert matches(res['fused_macs'], '142.39M') and matches(res['fused_macs'], '142M')
    assert res['train_macs'] == res['fused_macs']


@pytest.mark.parametrize('family', sorted(f for f in CLASSIFIERS if table_for(f)))
def test_registered_families_against_seed(family):
    """Training-form params are exact seed counts (same architecture); the inference form's MACs
    are within 0.5 % (a fuller fusion may change kernel shapes slightly)."""
    variant = next(iter(table_for(family)['variants']))
    (row,) = complexity.seed_table_rows(family, [variant])
    assert not row.get('error'), row.get('error')
    seed, ours = row['seed'], row['ours']
    if 'train_params' in seed:
        assert row['match']['train_params'], (ours['train_params'], seed['train_params'])
    value, _ = parse_figure(seed['macs'])
    assert abs(ours['fused_macs'] - value) <= 0.005 * value, (ours['fused_macs'], seed['macs'])
    md = complexity.format_seed_table(family, [row])
    assert f'| {variant} |' in md


def test_complexity_cli_seed_tables():
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/analysis/complexity.py'), '--seed-tables',
                           '--family', 'RepGhostNet', '--variants', '1.0x'],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert '4,073,604 / 4,073,604 ✓' in proc.stdout
    assert '4,058,772 / 4,058,772 ✓' in proc.stdout
    assert '4,051,648' in proc.stdout


# -- benchmark ---------------------------------------------------------------------------------
def test_benchmark_tiny(tmp_path):
    threads = torch.get_num_threads()
    try:
        rc = benchmark_tool.main(['--backbone', 'RepGhostNet:0.5x', '--shape', '64', '64', '--threads', '1',
                                  '--warmup', '1', '--rounds', '2', '--iters', '1',
                                  '--out-dir', str(tmp_path), '--name', 'tiny'])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    data = json.loads((tmp_path / 'tiny.json').read_text())
    assert {r['variant'] for r in data['results']} == {'train', 'fused', 'ort'}
    assert all(r['n'] == 2 and r['median_ms'] > 0 for r in data['results'])
    assert 'RepGhostNet:0.5x' in data['fuse_seconds']
    assert (tmp_path / 'tiny.png').stat().st_size > 1000
