"""ONNX export (``rep_backbones.deploy.export``) and its command line: onnxruntime parity (every registered
family, whole RetinaNet and Semantic FPN), and the ``NAME[:ARCH]`` spec parser. (Complexity against the papers'
tables: tests/test_complexity.py.)

Kept fast: smallest variant per family, small odd inputs, random weights with random BN statistics
(so a folding mistake cannot hide behind the default statistics).
"""
from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import pytest
import torch

import rep_backbones
from rep_backbones.deploy.export import build_for_export, check_onnx, export_onnx, onnx_op_counts
from rep_backbones.deploy.runtimes import ort_session
from rep_backbones.io.build import build_from_spec, is_backbone_spec, parse_backbone_spec, shape_tuple
from rep_backbones.models import BACKBONES, CLASSIFIERS

from .helpers import count_norms, randomize_bn, require, run, run_tool

ROOT = Path(__file__).resolve().parents[1]
SMALL_ODD = (67, 93)          # backbone-only exports (stride 32 still gives a 3x3 map)
DET_ODD = (131, 197)          # whole models (RetinaNet's P7 is stride 128)


def _config(*candidates: str) -> Path:
    """The first of ``candidates`` (paths under configs/) that exists; the configs are being renamed
    to mmdet's naming scheme, the old names are the fallback."""
    for rel in candidates:
        if (ROOT / 'configs' / rel).is_file():
            return ROOT / 'configs' / rel
    raise FileNotFoundError(f'none of {candidates} under configs/')


RETINANET = _config('repghostnet/retinanet_repghostnet-1.0x_fpn_1x_coco.py', 'retinanet_repghost_1_0x.py')
SEMFPN = _config('repghostnet/fpn_repghostnet-1.0x_8xb4-40k_ade20k-512x512.py', 'fpn_repghost_1_0x_ade20k_40k.py')


pytestmark = [pytest.mark.slow, pytest.mark.deploy, pytest.mark.usefixtures('one_thread')]


def _python(*args):
    """Run ``python ARGS`` as a user does (no PYTHONPATH: the package must come from the install)."""
    return run([sys.executable, *args], cwd=ROOT, unset=('PYTHONPATH',), env={'OMP_NUM_THREADS': '1'}, timeout=300)


def _export_and_check(module, reference, x, path, **kw):
    """Export ``module`` (fused), run onnxruntime on ``x``; returns (rel diff vs ``reference``,
    operator counts, the onnxruntime session)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        export_onnx(module, x, path, **kw)
    session = ort_session(path, threads=1)
    _, rel = check_onnx(reference, path, x, session)
    return rel, onnx_op_counts(path), session


# -- NAME[:ARCH] specs and shapes ----------------------------------------------------------------
def test_parse_backbone_spec():
    assert parse_backbone_spec('RepGhostNet:1.0x') == dict(type='RepGhostNet', arch='1.0x')
    assert parse_backbone_spec('RepGhostNet') == dict(type='RepGhostNet')
    default = parse_backbone_spec('RepGhostNet', fill_default=True)['arch']
    assert build_from_spec('RepGhostNet').arch == default
    assert parse_backbone_spec('RepNeXt:M0', CLASSIFIERS) == dict(type='RepNeXt', arch='M0')
    with pytest.raises(ValueError, match="unknown name 'RepGhost'.*RepGhostNet"):
        parse_backbone_spec('RepGhost:1.0x')
    with pytest.raises(ValueError, match='valid variants'):
        build_from_spec('RepGhostNet:7x')
    assert is_backbone_spec('RepGhostNet:0.5x') and not is_backbone_spec(str(RETINANET))
    assert not is_backbone_spec('NoSuchNet:1x')
    assert shape_tuple([65]) == (65, 65) and shape_tuple((65, 97)) == (65, 97) and shape_tuple(7) == (7, 7)
    with pytest.raises(ValueError, match='--shape takes H'):
        shape_tuple((1, 2, 3))


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
    _, rel2 = check_onnx(fused, tmp_path / f'{name}.onnx', x2, session)
    assert rel2 <= 1e-4


def test_export_cli_backbone_spec(tmp_path):
    """The command line from another directory (run in this process: :func:`run_tool`; that the tool starts
    with ``rep_backbones`` from the install, not from a sys.path entry, is :func:`test_tools_help`'s)."""
    out = tmp_path / 'rg.onnx'
    result = run_tool('tools/export_onnx.py', 'RepGhostNet:0.5x', 'none', '--out', out, '--backbone-only',
                      '--shape', '65', '97', cwd=tmp_path, env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'BatchNormalization nodes: 0' in result.stdout
    assert onnx_op_counts(out).get('Conv', 0) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['rg.onnx']     # no temporary file left


def test_build_for_export_unknown_variant():
    with pytest.raises(ValueError, match="unknown arch '9x'"):
        build_for_export('RepGhostNet:9x', 'none', 'backbone')


def test_tools_help():
    """Every tool's ``--help`` in one new interpreter (each tool run as ``__main__``, one start-up instead of
    one per tool): the other tests run the tools in their own process (tests.helpers.run_tool), so this is
    where each starts as a script from a checkout. The tools import ``rep_backbones`` as installed, with no
    sys.path set-up of their own (but for those in ``own_sys_path``)."""
    code = (
        'import runpy, sys\n'
        'for tool in sys.argv[1:]:\n'
        '    sys.argv = [tool, "--help"]\n'
        '    try:\n'
        '        runpy.run_path(tool, run_name="__main__")\n'
        '    except SystemExit as exit:\n'
        '        assert exit.code == 0, (tool, exit.code)\n'
        '    print("HELP-OK", tool, flush=True)\n')
    tools = [*sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'tools').glob('*.py')),
             'tools/analysis/complexity.py', 'tools/analysis/deploy_layouts.py']
    proc = _python('-c', code, *tools)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line.split()[1] for line in proc.stdout.splitlines() if line.startswith('HELP-OK')] == tools
    # the demo and the mmdeploy tool also run from a checkout without an install; deploy_layouts imports
    # a script beside it
    own_sys_path = ['tools/demo.py', 'tools/deploy_mmdeploy.py', 'tools/analysis/deploy_layouts.py']
    assert 'sys.path.insert' not in ''.join((ROOT / t).read_text() for t in tools if t not in own_sys_path)


# -- whole models from the configs -------------------------------------------------------------
@pytest.mark.parametrize('config,package,n_outputs', [(RETINANET, 'mmdet', 10), (SEMFPN, 'mmseg', 1)],
                         ids=['retinanet', 'semantic_fpn'])
def test_whole_model_onnx(config, package, n_outputs, tmp_path):
    require('mmcv.ops', package)           # mmdet/mmseg models import compiled ops
    from rep_backbones.io.build import TensorModeWrapper, build_model_from_config
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


