"""The configs: every one describes a consistent model (backbone widths = neck widths, deploy configs =
their training sibling built fused); the former flat names are stubs of the per-family configs; variants
inherit their family's reference; init weights name the official release files; placeholders fail
clearly. Building and running whole models: tests/test_whole_fusion.py."""
import ast
import copy
import functools
import glob
import json
import os
import re

import pytest
from mmengine.config import Config

from rep_backbones.checkpoint import CheckpointError
from rep_backbones.io.build import build_from_spec, build_model_from_config

pytestmark = [pytest.mark.slow, pytest.mark.mm]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, 'configs')
FAMILIES = ('repghostnet', 'repghostnetv2', 'mobilenetv4', 'repnext', 'repmobile')
# Official ImageNet weights with a download URL (README: configs/README.md); other families: local files.
RELEASES = {
    'repghostnet': ('https://github.com/ChengpengChen/RepGhost/releases/download/RepGhost/',
                    lambda arch: f"repghostnet_{arch.replace('.', '_')}_"),
    'repnext': ('https://github.com/suous/RepNeXt/releases/download/v1.0/',
                lambda arch: f'repnext_{arch.lower()}_distill_300e.pth'),
}


def _rel(path):
    return os.path.relpath(path, CONFIG_DIR).replace(os.sep, '/')


def _all_configs():
    """Every config file but the bases and mmdeploy's deploy configs (not models; tested with mmdeploy)."""
    paths = glob.glob(os.path.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    return sorted(p for p in paths if '_base_' not in _rel(p).split('/') and not _rel(p).startswith('mmdeploy/'))


def _stub_target(path):
    """The config a former name stands for, or None: a stub is one statement, ``_base_ = 'PATH'``."""
    body = ast.parse(open(path).read()).body
    if (len(body) == 1 and isinstance(body[0], ast.Assign) and [t.id for t in body[0].targets] == ['_base_']
            and isinstance(body[0].value, ast.Constant)):
        return os.path.normpath(os.path.join(os.path.dirname(path), body[0].value.value))
    return None


def _bases(path):
    for node in ast.parse(open(path).read()).body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ['_base_']:
            value = ast.literal_eval(node.value)
            return [value] if isinstance(value, str) else list(value)
    return []


CONFIGS = _all_configs()
FORMER = [p for p in CONFIGS if '/' not in _rel(p) or _rel(p).startswith('deploy/')]
BUILT = [p for p in CONFIGS if p not in FORMER]
TRAINING = [p for p in BUILT if _rel(p).split('/')[0] in FAMILIES and '/deploy/' not in _rel(p)]


@functools.lru_cache(maxsize=None)
def _loaded(path):
    """``Config.fromfile`` once per file (1-2 s each: the mmdet/mmseg bases); callers get a copy."""
    return Config.fromfile(path)


def _config(path):
    return copy.deepcopy(_loaded(path))


def _training_sibling(path):
    """The training config a deploy config stands for: ``FAMILY/deploy/NAME_deploy.py`` -> ``FAMILY/NAME.py``."""
    folder, name = os.path.split(path)
    return os.path.join(os.path.dirname(folder), name[:-len('_deploy.py')] + '.py')


@functools.lru_cache(maxsize=None)
def _built_backbone(backbone_cfg: str):
    """``(out_channels, deploy)`` of the backbone built from a JSON config: a detector, a Mask R-CNN and a
    segmentor of one variant share their backbone config, so each is built once."""
    backbone = build_from_spec(json.loads(backbone_cfg))
    return list(backbone.out_channels), backbone.deploy


@pytest.mark.parametrize('path', BUILT, ids=_rel)
def test_config_describes_a_consistent_model(path):
    """Every config: this package imported, the backbone built from it gives the widths the neck expects
    (per variant: the full detectors run on representatives, tests/test_whole_fusion.py), and the
    deploy flag follows the folder. A deploy config is its training sibling with the backbone built
    fused and nothing else changed."""
    cfg = _config(path)
    assert 'rep_backbones' in cfg.custom_imports['imports']
    backbone_cfg = dict(cfg.model.backbone, init_cfg=None)
    out_channels, built_deploy = _built_backbone(json.dumps(backbone_cfg, sort_keys=True))
    assert list(cfg.model.neck.in_channels) == out_channels, _rel(path)
    deploy = '/deploy/' in path.replace(os.sep, '/')
    assert built_deploy == deploy and bool(backbone_cfg.get('deploy')) == deploy
    if deploy:
        expected = _config(_training_sibling(path)).to_dict()
        expected['model']['backbone'].update(deploy=True, init_cfg=None)
        assert cfg.to_dict() == expected


def test_former_names_are_stubs_of_the_family_configs():
    """configs/<name>.py and configs/deploy/<name>_deploy.py stand for one family config each."""
    targets = {}
    for path in FORMER:
        target = _stub_target(path)
        assert target is not None, f'{_rel(path)}: expected one line `_base_ = PATH` (a former name)'
        assert os.path.isfile(target), f'{_rel(path)} -> {target}: no such file'
        family, *rest = _rel(target).split('/')
        assert family in FAMILIES and (rest[0] == 'deploy') == _rel(path).startswith('deploy/'), _rel(path)
        targets[_rel(path)] = _rel(target)
    assert len(set(targets.values())) == len(targets) == 84
    readme = open(os.path.join(CONFIG_DIR, 'README.md')).read()
    listed = dict(re.findall(r'^\| `([^`]+\.py)` \| \[`([^`]+\.py)`\]', readme, re.M))
    assert listed == targets, 'configs/README.md lists the former names and their targets'
    # the README's command line: the stub is the family config
    old, new = 'mask_rcnn_repghost_1_3x.py', 'repghostnet/mask-rcnn_repghostnet-1.3x_fpn_1x_coco.py'
    assert targets[old] == new
    assert Config.fromfile(os.path.join(CONFIG_DIR, old)).to_dict() == \
        Config.fromfile(os.path.join(CONFIG_DIR, new)).to_dict()


@pytest.mark.parametrize('family', FAMILIES)
def test_each_task_has_one_reference_and_variants_inherit_a_sibling(family):
    """A reference config starts from configs/_base_ (and mmdet/mmseg); every other config of the
    family inherits one config of a family folder and overrides what differs."""
    references = {}
    for path in [p for p in TRAINING if _rel(p).startswith(family + '/')]:
        bases = _bases(path)
        if all('_base_/' in b for b in bases):
            task = os.path.basename(path).split('_')[0]
            assert task not in references, f'{family}: two {task} references: {references.get(task)}, {path}'
            references[task] = path
        else:
            assert len(bases) == 1 and _rel(os.path.normpath(os.path.join(os.path.dirname(path), bases[0]))) \
                .split('/')[0] in FAMILIES, f'{_rel(path)}: inherits {bases}'
    # MobileNetV4 shares RepGhostNetV2's layout and channels: its configs inherit those
    assert set(references) <= {'retinanet', 'mask-rcnn', 'fpn'}
    assert family == 'mobilenetv4' or {'retinanet', 'mask-rcnn'} <= set(references)


@pytest.mark.parametrize('path', TRAINING, ids=_rel)
def test_backbone_init_names_the_official_release(path):
    cfg = _config(path)
    family = _rel(path).split('/')[0]
    checkpoint = cfg.model.backbone.init_cfg.checkpoint
    if family in RELEASES:
        prefix, file_name = RELEASES[family]
        assert checkpoint.startswith(prefix + file_name(cfg.model.backbone.arch)), checkpoint
    else:
        assert checkpoint.startswith('pretrained/'), checkpoint


LOCAL_WEIGHTS = [p for p in TRAINING if _rel(p).split('/')[0] not in RELEASES]


@pytest.mark.parametrize('path', LOCAL_WEIGHTS[:1], ids=_rel)
def test_missing_pretrained_file_stops_with_its_path(path, tmp_path, monkeypatch):
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(path)
    checkpoint = cfg.model.backbone.init_cfg.checkpoint
    monkeypatch.chdir(tmp_path)
    registry = __import__(f'{cfg.default_scope}.registry', fromlist=['MODELS']).MODELS
    __import__(f'{cfg.default_scope}.utils', fromlist=['x']).register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = registry.build(cfg.model)
    with pytest.raises(CheckpointError) as error:
        model.init_weights()
    assert 'not found' in str(error.value) and repr(checkpoint) in str(error.value)


@pytest.mark.parametrize('scope,base', [
    ('mmdet', 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'),
    ('mmseg', 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'),
])
def test_existing_project_needs_only_custom_imports(tmp_path, scope, base):
    """An mm project config that knows nothing of this repo: custom_imports + backbone type."""
    cfg_file = tmp_path / 'my_config.py'
    cfg_file.write_text(
        f"_base_ = ['{base}']\n"
        "custom_imports = dict(imports=['rep_backbones'], allow_failed_imports=False)\n"
        "model = dict(backbone=dict(_delete_=True, type='RepGhostNet', arch='1.0x'),\n"
        + ("             pretrained=None,  # mmseg passes model.pretrained to the backbone\n"
           if scope == 'mmseg' else '')
        +
        "             neck=dict(in_channels=[24, 40, 112, 160]))\n")
    model = build_model_from_config(str(cfg_file))
    assert type(model.backbone).__name__ == 'RepGhostNet'
