"""The released detectors and segmentors as zoo entries: the metafiles' ``Weights`` are the trained
models (the backbone's ImageNet file is ``Backbone Checkpoint``), and files in the official mmdet 2.x /
mmseg 0.x layout load strictly into the mmdet 3 / mmseg 1 models through ``load_from``,
``tools/test.py`` and ``mim test``, from an http URL (a server on 127.0.0.1, torch hub's cache in a
temporary TORCH_HOME), then fuse.

The synthetic files hold random values under the official names: ``backbone.`` + the official RepNeXt
keys (``tests/data/keys``, taken from the released files; the classification head dropped, as the
official detection backbone has none) and the neck / head keys as mmdet 2.28 and mmseg 0.30 name them
(:func:`legacy_neck_head_keys`, written out here, not read from the mmdet 3 model).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mmengine.config import Config

import rep_backbones
from rep_backbones.checkpoint import CheckpointError
from rep_backbones.io.build import build_model_from_config

from .helpers import keys_file, synthetic_state_dict
from .test_weights_url import hub_cache, served  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.mm]

ROOT = Path(__file__).resolve().parents[1]
RELEASE = 'https://github.com/suous/RepNeXt/releases/download/v1.0/'
DETECTORS = {f'repnext/mask-rcnn_repnext-m{i}_fpn_1x_coco.py': (f'repnext_m{i}', f'repnext_m{i}_coco.pth')
             for i in (3, 4, 5)}
SEGMENTORS = {f'repnext/fpn_repnext-m{i}_4xb4-80k_ade20k-512x512.py': (f'repnext_m{i}', f'repnext_m{i}_ade20k.pth')
              for i in (3, 4, 5)}
RELEASED = {**DETECTORS, **SEGMENTORS}


def legacy_neck_head_keys(scope: str) -> set:
    """Parameter and buffer names outside the backbone, as mmdet 2.28's Mask R-CNN R-50-FPN and
    mmseg 0.30's Semantic FPN (FPN neck, FPNHead with BN) save them."""
    fpn = {f'neck.{kind}.{i}.conv.{p}' for kind in ('lateral_convs', 'fpn_convs') for i in range(4)
           for p in ('weight', 'bias')}
    if scope == 'mmdet':
        heads = {f'rpn_head.{m}.{p}' for m in ('rpn_conv', 'rpn_cls', 'rpn_reg') for p in ('weight', 'bias')}
        heads |= {f'roi_head.bbox_head.{m}.{p}' for m in ('fc_cls', 'fc_reg', 'shared_fcs.0', 'shared_fcs.1')
                  for p in ('weight', 'bias')}
        mask_head = [f'convs.{i}.conv' for i in range(4)] + ['upsample', 'conv_logits']
        heads |= {f'roi_head.mask_head.{m}.{p}' for m in mask_head for p in ('weight', 'bias')}
        return fpn | heads
    # FPNHead: scale head i has max(1, i) ConvModules (3x3 conv + BN + ReLU), an upsample after each
    # ConvModule from scale 1 on (no parameters), then conv_seg.
    heads = {'decode_head.conv_seg.weight', 'decode_head.conv_seg.bias'}
    for i in range(4):
        for j in range(max(1, i)):
            index = 2 * j if i > 0 else 0
            heads.add(f'decode_head.scale_heads.{i}.{index}.conv.weight')
            heads |= {f'decode_head.scale_heads.{i}.{index}.bn.{p}'
                      for p in ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')}
    return fpn | heads


def official_backbone_state(keys_name: str, seed: int = 0) -> dict:
    """The official RepNeXt keys with random values, without the classification head."""
    state = synthetic_state_dict(keys_file(f'{keys_name}.keys.txt'), seed=seed)
    return {k: v for k, v in state.items() if not k.startswith(('head.', 'head_dist.'))}


def legacy_checkpoint(config: str, keys_name: str, seed: int = 0) -> dict:
    """An mmdet 2.x / mmseg 0.x checkpoint of ``config``'s model in the official layout."""
    scope = Config.fromfile(str(ROOT / 'configs' / config)).default_scope
    model = build_model_from_config(str(ROOT / 'configs' / config), keep_sync_bn=True)
    shapes = {k: v.shape for k, v in model.state_dict().items() if not k.startswith('backbone.')}
    names = legacy_neck_head_keys(scope)
    assert names == set(shapes), f'key names changed since mmdet 2 / mmseg 0.x: {sorted(names ^ set(shapes))[:6]}'
    gen = torch.Generator().manual_seed(seed + 1)
    state = {f'backbone.{k}': v for k, v in official_backbone_state(keys_name, seed).items()}
    for name in sorted(names):
        if name.endswith('num_batches_tracked'):
            state[name] = torch.tensor(1000)
        elif name.endswith('running_var'):
            state[name] = torch.rand(shapes[name], generator=gen) + 0.5
        else:
            state[name] = torch.randn(shapes[name], generator=gen) * 0.05
    meta = ({'mmdet_version': '2.28.2', 'mmcv_version': '1.7.1', 'CLASSES': ('person',) * 80} if scope == 'mmdet'
            else {'mmseg_version': '0.30.0', 'mmcv_version': '1.7.1', 'CLASSES': ('wall',) * 150})
    return {'meta': meta, 'state_dict': state}


def _publish(served, checkpoint: dict, name: str) -> str:  # noqa: F811
    tmp = served.root / f'{name}.tmp'
    torch.save(checkpoint, tmp)
    tmp.rename(served.root / name)
    return f'{served.url}/{name}'


# -- the metafiles ------------------------------------------------------------------------------------
def _metafile_models() -> dict:
    models = {}
    for path in sorted((ROOT / 'configs').glob('*/metafile.yml')):
        for entry in yaml.safe_load(path.read_text())['Models']:
            models[entry['Config']] = entry
    return models


def test_weights_are_the_released_trained_models():
    """``Weights`` is a trained detector / segmentor where the paper released one and absent elsewhere;
    the ImageNet file the training starts from is ``Backbone Checkpoint``, the config's init_cfg."""
    models = _metafile_models()
    with_weights = {cfg: m['Weights'] for cfg, m in models.items() if 'Weights' in m}
    assert with_weights == {f'configs/{cfg}': RELEASE + name for cfg, (_, name) in RELEASED.items()}
    for cfg, entry in models.items():
        init = Config.fromfile(str(ROOT / cfg)).model.backbone.get('init_cfg') or {}
        url = init.get('checkpoint', '')
        assert entry['Metadata'].get('Backbone Checkpoint') == (url if url.startswith('http') else None), cfg
        assert entry.get('Weights') != url, f'{cfg}: Weights must be the trained model, not the backbone file'
    assert not [c for c in with_weights if 'repmobile' in c], "RepMobile's linked files are RepViT's"


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(sys.executable), 'mim')),
                    reason='openmim not installed')
def test_mim_search_weight_lists_the_trained_models(tmp_path):
    out = tmp_path / 'weights.json'
    mim = os.path.join(os.path.dirname(sys.executable), 'mim')
    run = subprocess.run([mim, 'search', 'rep_backbones', '--field', 'weight', '--json', str(out)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    columns = json.loads(out.read_text())
    assert set(columns) == {'weight'}, set(columns)
    listed = {name: url for name, url in columns['weight'].items() if url}
    assert listed == {Path(cfg).stem: RELEASE + name for cfg, (_, name) in RELEASED.items()}


# -- loading the released files ------------------------------------------------------------------------
@pytest.mark.parametrize('config', sorted(RELEASED))
def test_legacy_file_loads_strictly_through_load_from_and_fuses(config, served, hub_cache, tmp_path, capfd):  # noqa: F811
    """mmengine's Runner with ``load_from=URL``: every tensor of the file lands where it belongs (neck
    and heads by name; the backbone as the same official tensors loaded by the backbone's own
    Pretrained path), nothing is missing or left over, the log names the file's origin, and the
    loaded model fuses to the same outputs. (RepNeXt's training-form keys are the official ones, so
    its backbone has nothing to convert.)"""
    from mmengine.runner import Runner
    keys_name, name = RELEASED[config]
    checkpoint = legacy_checkpoint(config, keys_name)
    url = _publish(served, checkpoint, name)
    cfg = Config.fromfile(str(ROOT / 'configs' / config))
    cfg.model.backbone.init_cfg = None
    cfg.work_dir, cfg.load_from, cfg.launcher = str(tmp_path / 'work'), url, 'none'
    runner = Runner.from_cfg(cfg)
    capfd.readouterr()
    runner.load_or_resume()
    log = ''.join(capfd.readouterr())
    assert 'written by mm' in log, log[-2000:]
    assert 'do not match exactly' not in log, log[-3000:]   # mmengine's missing / unexpected key report
    model = runner.model.eval()
    loaded = model.state_dict()
    for key, value in checkpoint['state_dict'].items():
        if not key.startswith('backbone.'):
            assert torch.equal(loaded[key], value), key
    reference = rep_backbones.build_backbone('RepNeXt', arch=keys_name.split('_')[1].upper())
    reference.load_backbone_state_dict(official_backbone_state(keys_name))
    expected = reference.state_dict()
    assert {k[len('backbone.'):] for k in loaded if k.startswith('backbone.')} == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[f'backbone.{key}'], value), key
    x = torch.randn(1, 3, 67, 91)
    with torch.no_grad():
        ref = model.backbone(x)
        fused = rep_backbones.fuse(model).backbone(x)
    assert len(ref) == len(fused) == 4
    for a, b in zip(ref, fused):
        assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def _coco_named_toy_set(root: Path) -> Path:
    """Two toy COCO images whose annotation file names the 80 COCO classes (the released detectors
    predict those), the toy shapes mapped onto the first four."""
    from mmdet.datasets import CocoDataset

    from rep_backbones.toy_data import make_toy_coco
    paths = make_toy_coco(str(root), num_train=1, num_val=2, image_size=(96, 128))
    ann = json.loads(Path(paths['val_ann']).read_text())
    old_ids = sorted(c['id'] for c in ann['categories'])
    ann['categories'] = [{'id': i + 1, 'name': n} for i, n in enumerate(CocoDataset.METAINFO['classes'])]
    for a in ann['annotations']:
        a['category_id'] = old_ids.index(a['category_id']) + 1
    out = root / 'annotations' / 'instances_val2017_coco80.json'
    out.write_text(json.dumps(ann))
    return out


def _toy_test_options(root: Path, ann: Path) -> list:
    """``--cfg-options`` that point a COCO config's test set at the toy images, at a small test scale."""
    return ['model.backbone.init_cfg=None', f'test_dataloader.dataset.data_root={root}/',
            f'test_dataloader.dataset.ann_file={ann}', 'test_dataloader.dataset.data_prefix.img=val2017/',
            f'test_evaluator.ann_file={ann}', 'test_dataloader.dataset.pipeline.1.scale=(256,192)']


def test_missing_neck_key_stops_the_test_tool_naming_it(served, hub_cache, tmp_path):  # noqa: F811
    """``tools/test.py`` loads strictly: a file without one FPN weight is refused before testing."""
    config = 'repnext/mask-rcnn_repnext-m3_fpn_1x_coco.py'
    checkpoint = legacy_checkpoint(config, 'repnext_m3')
    del checkpoint['state_dict']['neck.fpn_convs.2.conv.weight']
    url = _publish(served, checkpoint, 'repnext_m3_coco_incomplete.pth')
    root = tmp_path / 'coco'
    ann = _coco_named_toy_set(root)
    proc = subprocess.run([sys.executable, 'tools/test.py', str(ROOT / 'configs' / config), url,
                           '--work-dir', str(tmp_path / 'work'), '--cfg-options', *_toy_test_options(root, ann)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'missing keys in source state_dict: neck.fpn_convs.2.conv.weight' in log, log[-3000:]
    assert 'coco/bbox_mAP' not in log


def test_released_detector_through_tools_test(served, hub_cache, tmp_path):  # noqa: F811
    """``python tools/test.py CONFIG URL`` on the RepNeXt-M3 Mask R-CNN file: loaded strictly,
    converted, fused by RepFuseHook (checked against the training form on the first batch), tested."""
    config = 'repnext/mask-rcnn_repnext-m3_fpn_1x_coco.py'
    checkpoint = legacy_checkpoint(config, 'repnext_m3')
    url = _publish(served, checkpoint, 'repnext_m3_coco.pth')
    root = tmp_path / 'coco'
    ann = _coco_named_toy_set(root)
    proc = subprocess.run([sys.executable, 'tools/test.py', str(ROOT / 'configs' / config), url,
                           '--work-dir', str(tmp_path / 'work'), '--out-json', str(tmp_path / 'metrics.json'),
                           '--cfg-options', *_toy_test_options(root, ann)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert 'written by mmdet 2.28.2 (mmcv 1.7.1)' in log
    assert 'RepFuseHook (test): fused backbone' in log and 'fused vs training form on the first batch' in log
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metrics)


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(sys.executable), 'mim')),
                    reason='openmim not installed')
def test_released_segmentor_through_mim_test(served, hub_cache, tmp_path):  # noqa: F811
    """``mim test rep_backbones CONFIG --checkpoint URL`` on the RepNeXt-M3 Semantic FPN file."""
    from rep_backbones.toy_data import make_toy_ade20k
    config = 'repnext/fpn_repnext-m3_4xb4-80k_ade20k-512x512.py'
    url = _publish(served, legacy_checkpoint(config, 'repnext_m3'), 'repnext_m3_ade20k.pth')
    root = tmp_path / 'ade'
    make_toy_ade20k(str(root), num_train=1, num_val=2, image_size=(96, 128))
    mim = os.path.join(os.path.dirname(sys.executable), 'mim')
    options = ['model.backbone.init_cfg=None', f'test_dataloader.dataset.data_root={root}',
               'test_dataloader.dataset.pipeline.1.scale=(256,192)']
    proc = subprocess.run([mim, 'test', 'rep_backbones', str(ROOT / 'configs' / config), '--checkpoint', url,
                           '--work-dir', str(tmp_path / 'work'), '--cfg-options', *options],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert 'written by mmseg 0.30.0 (mmcv 1.7.1)' in log
    assert 'RepFuseHook (test): fused backbone' in log and 'mIoU' in log


def test_repvit_file_in_a_repmobile_model_says_what_it_is(tmp_path):
    """RepMobile's README links RepViT's detectors: loading one into a RepMobile config stops with a
    message that names RepViT (not a list of mismatched keys)."""
    from mmengine.runner.checkpoint import load_checkpoint
    model = build_model_from_config(str(ROOT / 'configs' / 'repmobile' / 'mask-rcnn_repmobile-s_fpn_1x_coco.py'))
    state = {'backbone.features.0.0.c.weight': torch.zeros(32, 3, 3, 3),
             'backbone.features.0.0.bn.weight': torch.ones(32),
             'backbone.features.2.token_mixer.0.conv.c.weight': torch.zeros(64, 1, 3, 3),
             'neck.lateral_convs.0.conv.weight': torch.zeros(256, 64, 1, 1)}
    path = tmp_path / 'repvit_m1_1_coco.pth'
    torch.save({'meta': {'mmdet_version': '2.28.2'}, 'state_dict': state}, path)
    with pytest.raises(CheckpointError, match="RepMobile: .*a RepViT model in RepViT's official layout"):
        load_checkpoint(model, str(path), map_location='cpu')
