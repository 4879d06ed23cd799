#!/usr/bin/env python
"""Write the mim model zoo: ``configs/<family>/metafile.yml`` and ``model-index.yml``, from the
configs themselves.

    python tools/analysis/make_metafiles.py            # (re)write the metafiles and model-index.yml
    python tools/analysis/make_metafiles.py --check    # exit 1 if a file is not what it would write

One model per training config in a family folder (``deploy/`` and the flat former names left out).
Read from the config: task, dataset, schedule, batch size, backbone and its ``init_cfg.checkpoint``
(an http(s) URL becomes the model's ``Backbone Checkpoint``: the ImageNet weights training starts
from). ``Weights`` is, as everywhere in OpenMMLab, the *trained* detector or segmentor
(``TRAINED_WEIGHTS`` below): listed where the paper released one, absent elsewhere, so
``mim search rep_backbones --field weight`` lists exactly the models with trained weights. Counted here,
with ``rep_backbones.complexity`` (what ``tools/analysis/complexity.py``
prints): the backbone's parameters as the config builds it (training form and fused) and its FLOPs
(conv + linear multiply-accumulates, as the papers count them) in the fused form for one image at the
task's input size. ``Results`` are the papers' numbers (``PAPER_RESULTS`` below, each with its
source), marked by ``Results Source`` in the model's metadata; configs without a published run have
none. ``model-index.yml`` imports every ``configs/*/metafile.yml`` there is.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import yaml

import rep_backbones
from rep_backbones.complexity import count_macs, count_params

ROOT = Path(__file__).resolve().parents[2]

# Family folder -> collection. Paper / code facts: docs/families/*.md and the official READMEs.
FAMILIES = {
    'repghostnet': dict(
        Name='RepGhostNet',
        Architecture=['RepGhost bottleneck', 'Structural re-parameterization'],
        Paper=dict(URL='https://arxiv.org/abs/2211.06088',
                   Title='RepGhost: A Hardware-Efficient Ghost Module via Re-parameterization'),
        Code=dict(URL='https://github.com/ChengpengChen/RepGhost'),
        Pretrained='ImageNet-1k (official release "RepGhost")'),
    'repghostnetv2': dict(
        Name='RepGhostNetV2',
        Architecture=['Universal Inverted Bottleneck', 'RepGhost-style shortcut'],
        Code=dict(URL='https://github.com/ChengpengChen/RepGhostNetV2'),
        Pretrained='ImageNet-1k (no official release: bring your own)'),
    'mobilenetv4': dict(
        Name='MobileNetV4',
        Architecture=['Universal Inverted Bottleneck'],
        Paper=dict(URL='https://arxiv.org/abs/2404.10518',
                   Title='MobileNetV4 - Universal Models for the Mobile Ecosystem'),
        Code=dict(URL='https://github.com/huggingface/pytorch-image-models'),
        Pretrained='ImageNet-1k (timm weights, Hugging Face hub)'),
    'repnext': dict(
        Name='RepNeXt',
        Architecture=['Multi-scale depthwise convolution', 'Structural re-parameterization'],
        Paper=dict(URL='https://arxiv.org/abs/2406.16004',
                   Title='RepNeXt: A Fast Multi-Scale CNN using Structural Reparameterization'),
        Code=dict(URL='https://github.com/suous/RepNeXt'),
        Pretrained='ImageNet-1k (official release "v1.0", distilled 300 epochs)'),
    'repmobile': dict(
        Name='RepMobile',
        Architecture=['VGG-style inference block', 'Structural re-parameterization'],
        Paper=dict(Title='RepMobile: A Deep Mobile VGG-style CNN with Better Identity Mapping'),
        Code=dict(URL='https://github.com/zhanghao5201/RepMobile'),
        Pretrained='ImageNet-1k (official files, no download URL)'),
}

# The papers' / official repositories' numbers for the configs that repeat an official run.
# RepNeXt: README of suous/RepNeXt (Mask R-CNN 1x COCO, Semantic FPN ADE20K). RepMobile: README of
# zhanghao5201/RepMobile. RepGhostNet, RepGhostNetV2, MobileNetV4: no detection / segmentation run
# published with code.
PAPER_RESULTS = {
    'mask-rcnn_repnext-m3_fpn_1x_coco': {'box AP': 40.8, 'mask AP': 37.8},
    'mask-rcnn_repnext-m4_fpn_1x_coco': {'box AP': 42.9, 'mask AP': 39.1},
    'mask-rcnn_repnext-m5_fpn_1x_coco': {'box AP': 44.7, 'mask AP': 40.7},
    'fpn_repnext-m3_4xb4-80k_ade20k-512x512': {'mIoU': 40.6},
    'fpn_repnext-m4_4xb4-80k_ade20k-512x512': {'mIoU': 43.3},
    'fpn_repnext-m5_4xb4-80k_ade20k-512x512': {'mIoU': 45.0},
    'mask-rcnn_repmobile-s_fpn_1x_coco': {'box AP': 37.3, 'mask AP': 35.0},
    'mask-rcnn_repmobile-l_fpn_1x_coco': {'box AP': 41.5, 'mask AP': 37.9},
    'fpn_repmobile-l_8xb4-40k_ade20k-512x512': {'mIoU': 42.2},
}
RESULTS_SOURCE = 'paper (official code and run, not re-run with this package)'
# Trained detectors / segmentors released with the papers: a model's ``Weights`` (what ``mim download``
# fetches and ``mim test --checkpoint`` evaluates). Written by mmdet 2.28 / mmseg 0.30; they load into
# these configs as they are (docs/weights.md, "Trained detectors and segmentors"). RepMobile's README
# links RepViT's files (repvit_m1_1_coco.pth, ...), not RepMobile models: none are listed for it.
REPNEXT_RELEASE = 'https://github.com/suous/RepNeXt/releases/download/v1.0/'
TRAINED_WEIGHTS = {
    **{f'mask-rcnn_repnext-m{i}_fpn_1x_coco': f'{REPNEXT_RELEASE}repnext_m{i}_coco.pth' for i in (3, 4, 5)},
    **{f'fpn_repnext-m{i}_4xb4-80k_ade20k-512x512': f'{REPNEXT_RELEASE}repnext_m{i}_ade20k.pth' for i in (3, 4, 5)},
}
TRAINED_WEIGHTS_ORIGIN = {'mmdet': 'official release, mmdet 2.28 checkpoint (loads as it is)',
                        'mmseg': 'official release, mmseg 0.30 checkpoint (loads as it is)'}
TASKS = {'box AP': 'Object Detection', 'mask AP': 'Instance Segmentation', 'mIoU': 'Semantic Segmentation'}
# (height, width) of one test image: mmdet's 1333x800 COCO scale, mmseg's 512x512 ADE20K crop.
INPUT_SIZE = {'mmdet': (800, 1333), 'mmseg': (512, 512)}


def training_configs(family: str) -> List[Path]:
    """The family's training configs: ``configs/<family>/*.py`` (deploy forms live in ``deploy/``)."""
    return sorted((ROOT / 'configs' / family).glob('*.py'))


def backbone_complexity(backbone_cfg: dict, input_size: Tuple[int, int]) -> Dict[str, float]:
    """Params of the backbone as configured (training form, fused) and fused MACs at ``input_size``.

    The norm layers are built as plain BN (SyncBN has the same parameters); no weights are loaded.
    """
    kwargs = {k: v for k, v in backbone_cfg.items() if k not in ('type', 'init_cfg', '_delete_')}
    kwargs['norm_cfg'] = dict(type='BN')
    model = rep_backbones.build_backbone(backbone_cfg['type'], **kwargs).eval()
    fused = rep_backbones.fuse(copy.deepcopy(model))
    return {'Backbone Params (M)': round(count_params(model) / 1e6, 2),
            'Backbone Params Fused (M)': round(count_params(fused) / 1e6, 2),
            'Backbone FLOPs (G)': round(count_macs(fused, input_size) / 1e9, 2)}


def model_entry(path: Path, collection: str, pretrained: str) -> dict:
    """The metafile entry of one training config."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(path), import_custom_modules=False)
    name = path.stem
    scope = cfg.default_scope
    backbone = cfg.model.backbone.to_dict()
    if scope == 'mmdet':
        gpus = cfg.auto_scale_lr.base_batch_size // cfg.train_dataloader.batch_size
        schedule = {'Epochs': cfg.train_cfg.max_epochs}
        data = 'COCO'
    else:
        gpus = int(re.search(r'_(\d+)xb\d+-', name).group(1))   # mmseg names: ..._8xb4-40k_...
        schedule = {'Iterations': cfg.train_cfg.max_iters}
        data = 'ADE20K'
    height, width = INPUT_SIZE[scope]
    metadata = {
        'Training Data': data,
        'Training Resources': f'{gpus}x GPUs',
        'Batch Size': gpus * cfg.train_dataloader.batch_size,
        **schedule,
        'Backbone': f"{backbone['type']} {backbone['arch']}",
        **backbone_complexity(backbone, (height, width)),
        'FLOPs Input': f'3x{height}x{width}',
        'Pretrained': pretrained,
    }
    entry = {'Name': name, 'In Collection': collection,
             'Config': path.relative_to(ROOT).as_posix(), 'Metadata': metadata}
    if name in PAPER_RESULTS:
        metadata['Results Source'] = RESULTS_SOURCE
        entry['Results'] = [{'Task': TASKS[metric], 'Dataset': data, 'Metrics': {metric: value}}
                            for metric, value in PAPER_RESULTS[name].items()]
    checkpoint = (backbone.get('init_cfg') or {}).get('checkpoint', '')
    if checkpoint.startswith(('http://', 'https://')):
        metadata['Backbone Checkpoint'] = checkpoint
    if name in TRAINED_WEIGHTS:
        metadata['Checkpoint Origin'] = TRAINED_WEIGHTS_ORIGIN[scope]
        entry['Weights'] = TRAINED_WEIGHTS[name]
    return entry


def metafile(family: str) -> dict:
    info = FAMILIES[family]
    collection = {'Name': info['Name'],
                  'Metadata': {'Architecture': info['Architecture']},
                  **{k: info[k] for k in ('Paper', 'Code') if k in info},
                  'README': f'configs/{family}/README.md'}
    models = [model_entry(p, info['Name'], info['Pretrained']) for p in training_configs(family)]
    return {'Collections': [collection], 'Models': models}


def model_index() -> dict:
    return {'Import': sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'configs').glob('*/metafile.yml'))}


def dump(data: dict, header: str) -> str:
    return header + yaml.safe_dump(data, sort_keys=False, width=120, allow_unicode=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true', help='compare with the files instead of writing them')
    parser.add_argument('--family', nargs='+', choices=sorted(FAMILIES), default=sorted(FAMILIES))
    args = parser.parse_args(argv)
    header = '# Written by tools/analysis/make_metafiles.py: edit the configs or the script, then re-run it.\n'
    files = {ROOT / 'configs' / f / 'metafile.yml': dump(metafile(f), header) for f in args.family}
    files[ROOT / 'model-index.yml'] = None   # after the metafiles: it imports what exists
    stale = []
    for path, text in files.items():
        if text is None:
            text = dump(model_index(), header + '# Other folders (timm comparators, mmdeploy) join by adding '
                        'configs/<folder>/metafile.yml.\n')
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.relative_to(ROOT).as_posix())
        else:
            path.write_text(text)
            print(f'wrote {path.relative_to(ROOT)}')
    if stale:
        print('out of date (run tools/analysis/make_metafiles.py): ' + ', '.join(stale))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
