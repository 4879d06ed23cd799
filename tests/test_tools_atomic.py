"""Atomic writes (``rep_backbones.io.atomic``) and the files the tools write with them: a writer
that fails half-way leaves the destination as it was (absent, or its previous content) and no
temporary file behind.

The failing writers are the real ones (``torch.save``, ``torch.onnx.export``, ``json.dump``)
replaced by a version that writes some bytes and then raises, as a full disk or a kill would.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from rep_backbones.deploy import export as onnx_export
from rep_backbones.io import atomic
from rep_backbones.io.atomic import atomic_write, write_json

from .helpers import require

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[1]


class WriterDied(RuntimeError):
    pass


def _dies_after_partial_write(target_arg: int = 1):
    """A stand-in writer: writes half a file to its path argument (position ``target_arg``), then raises."""
    def writer(*args, **kwargs):
        with open(args[target_arg], 'wb') as f:
            f.write(b'PARTIAL' * 100)
        raise WriterDied('disk full')
    return writer


def _entries(directory: Path):
    return sorted(p.name for p in directory.iterdir())


# -- the helper ----------------------------------------------------------------------------------
def test_atomic_write_replaces_only_when_complete(tmp_path):
    dst = tmp_path / 'out' / 'file.bin'          # the directory is created
    with atomic_write(dst) as tmp:
        assert Path(tmp).parent == dst.parent and not dst.exists()
        Path(tmp).write_bytes(b'new')
    assert dst.read_bytes() == b'new' and _entries(dst.parent) == ['file.bin']

    with pytest.raises(WriterDied):
        with atomic_write(dst) as tmp:
            Path(tmp).write_bytes(b'half')
            raise WriterDied('killed')
    assert dst.read_bytes() == b'new' and _entries(dst.parent) == ['file.bin']


def test_atomic_write_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='created no file'):
        with atomic_write(tmp_path / 'never.bin'):
            pass
    assert _entries(tmp_path) == []
    with pytest.raises(IsADirectoryError, match='is a directory'):
        with atomic_write(tmp_path):
            pass


def test_write_json_keeps_previous_file(tmp_path, monkeypatch):
    dst = tmp_path / 'metrics.json'
    write_json({'a': 1.0}, dst)
    assert json.loads(dst.read_text()) == {'a': 1.0}

    def dump_dies(obj, f, **kw):
        f.write('{"a": 2')
        raise WriterDied('disk full')
    monkeypatch.setattr(atomic.json, 'dump', dump_dies)
    with pytest.raises(WriterDied):
        write_json({'a': 2.0}, dst)
    assert json.loads(dst.read_text()) == {'a': 1.0}
    assert _entries(tmp_path) == ['metrics.json']


# -- ONNX export -----------------------------------------------------------------------------------
def test_onnx_export_is_atomic(tmp_path, monkeypatch):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    x = torch.randn(1, 3, 9, 11)
    dst = tmp_path / 'm.onnx'
    monkeypatch.setattr(onnx_export.torch.onnx, 'export', _dies_after_partial_write(target_arg=2))
    with pytest.raises(WriterDied):
        onnx_export.export_onnx(module, x, dst)
    assert _entries(tmp_path) == []
    monkeypatch.undo()
    assert onnx_export.export_onnx(module, x, dst) == ['output0']
    assert _entries(tmp_path) == ['m.onnx']
    max_abs, rel = onnx_export.check_onnx(module, dst, x)
    assert rel <= 1e-5, (max_abs, rel)


# -- fused checkpoint ------------------------------------------------------------------------------
TOY_RETINANET = ROOT / 'configs' / 'toy' / 'toy_retinanet_repghost_1_0x.py'
SMALL = {'model.backbone.arch': '0.5x', 'model.neck.in_channels': [12, 20, 56, 80]}


@pytest.fixture(scope='module')
def trained_checkpoint(tmp_path_factory):
    """A random-init RetinaNet (RepGhostNet 0.5x) saved as an mmengine-style checkpoint."""
    require('mmdet')
    from rep_backbones.io.build import build_model_from_config
    torch.manual_seed(0)
    model = build_model_from_config(str(TOY_RETINANET), None, cfg_options=SMALL)
    path = tmp_path_factory.mktemp('ckpt') / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': model.state_dict()}, path)
    return path


def test_fuse_checkpoint_atomic(trained_checkpoint, tmp_path, monkeypatch):
    from rep_backbones.checkpoint import read_checkpoint
    from rep_backbones.deploy import fused_checkpoint
    dst = tmp_path / 'fused.pth'
    dst.write_bytes(b'previous fused file')
    real_save = torch.save
    monkeypatch.setattr(fused_checkpoint.torch, 'save', _dies_after_partial_write(target_arg=1))
    with pytest.raises(WriterDied):
        fused_checkpoint.fuse_checkpoint(str(TOY_RETINANET), str(trained_checkpoint), str(dst), SMALL)
    assert dst.read_bytes() == b'previous fused file'
    assert _entries(tmp_path) == ['fused.pth']

    monkeypatch.setattr(fused_checkpoint.torch, 'save', real_save)
    summary = fused_checkpoint.fuse_checkpoint(str(TOY_RETINANET), str(trained_checkpoint), str(dst), SMALL)
    assert summary.startswith('fused backbone;'), summary
    assert _entries(tmp_path) == ['fused.pth']
    ckpt = read_checkpoint(str(dst))
    assert ckpt['meta']['fused_from'] == os.path.abspath(trained_checkpoint) and ckpt['meta']['epoch'] == 1
    train_keys = [k for k in read_checkpoint(str(trained_checkpoint))['state_dict'] if k.startswith('backbone.')]
    fused_keys = [k for k in ckpt['state_dict'] if k.startswith('backbone.')]
    assert 0 < len(fused_keys) < len(train_keys)          # branches and BNs folded away
