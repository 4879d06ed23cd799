"""Published / seed complexity figures of each family's ImageNet classifier (the one data file).

``tools/analysis/complexity.py --seed-tables`` prints, for every family registered in
``rep_backbones.models.CLASSIFIERS``, our counts beside these. Figures are strings so that their
precision is explicit: ``'4,073,604'`` is exact, ``'142.39M'`` / ``'0.388G'`` / ``'4.1M'`` match
anything that rounds to them (half a unit of the last digit). Sources: the project's reference
notes (ARCHITECTURES.md §1.6 RepGhostNet, §2.3 RepGhostNetV2 / MobileNetV4, §3.1 RepNeXt,
§4.1 RepMobile), i.e. the official READMEs plus counts measured on the official code.

Per family:
    names: registry names this table applies to (case-insensitive; first registered one wins).
    source / note: where the numbers come from and what they count.
    classifier_kwargs: passed to ``build_classifier`` when its signature accepts them (e.g. the
        seed's train-form count includes distillation heads).
    official_deploy: ``(module class path, function path)``: the seed's own deploy form, obtained
        by applying the function to every module of that class of the training form (RepGhost's
        official converter fuses the RepGhost branches but keeps conv+BN pairs).
    readme_params_form: which of our counts the README's rounded params figure describes.
    readme_macs_offset: what the README's FLOPs add to conv+linear MACs (RGv2/MNv4: the 1,280
        conv_head bias additions).
    variants: variant -> figures. Keys: ``input`` (resolution, default 224), ``train_params``,
        ``official_deploy_params``, ``fused_params``, ``backbone_train_params`` (backbone alone,
        no head), ``macs`` (conv + linear MACs of the inference form), ``readme_params``,
        ``readme_macs``.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

# RepGhostNetV2 only moves depthwise convs between blocks, so its counts are MobileNetV4's (§2.3).
MNV4_CONV_COUNTS = {
    'S': dict(input=224, train_params='3,772,744', macs='186,005,568', readme_macs='186,006,848'),
    'M': dict(input=256, train_params='9,714,232', macs='1,080,244,224', readme_macs='1,080,245,504'),
    'L': dict(input=384, train_params='32,589,584', macs='6,376,220,672', readme_macs='6,376,221,952'),
}

SEED_TABLES: Dict[str, dict] = {
    'RepGhostNet': dict(
        names=('RepGhostNet',),
        source='ChengpengChen/RepGhost README (Params/FLOPs) + counts on the official code (ARCHITECTURES.md §1.6)',
        note=('the seed counts the official deploy form (RepGhost branches fused, conv+BN pairs kept); '
              'our fusion also folds every conv+BN, so "ours fused" has fewer parameters'),
        official_deploy=('timm.models.repghost.RepGhostModule',
                         'rep_backbones.models.repghostnet.fuse_ghost_branches'),
        readme_params_form='official_deploy',
        variants={
            '0.5x': dict(train_params='2,313,968', official_deploy_params='2,306,528', macs='43.31M',
                         readme_params='2.3M', readme_macs='43M'),
            '0.58x': dict(train_params='2,546,388', official_deploy_params='2,537,736', macs='59.80M',
                          readme_params='2.5M', readme_macs='60M'),
            '0.8x': dict(train_params='3,278,968', official_deploy_params='3,267,112', macs='95.52M',
                         readme_params='3.3M', readme_macs='96M'),
            '1.0x': dict(train_params='4,073,604', official_deploy_params='4,058,772', macs='142.39M',
                         readme_params='4.1M', readme_macs='142M'),
            '1.11x': dict(train_params='4,539,984', official_deploy_params='4,523,568', macs='170.12M',
                          readme_params='4.5M', readme_macs='170M'),
            '1.3x': dict(train_params='5,478,612', official_deploy_params='5,459,316', macs='231.12M',
                         readme_params='5.5M', readme_macs='231M'),
            '1.5x': dict(train_params='6,575,336', official_deploy_params='6,553,064', macs='301.32M',
                         readme_params='6.6M', readme_macs='301M'),
            '2.0x': dict(train_params='9,796,124', official_deploy_params='9,766,460', macs='515.87M',
                         readme_params='9.8M', readme_macs='516M'),
        }),
    'RepGhostNetV2': dict(
        names=('RepGhostNetV2',),
        source='ChengpengChen/RepGhostNetV2 README + counts on the official code (ARCHITECTURES.md §2.3)',
        note=('the seed has no re-parameterization: its params are the training form incl. BN; its '
              'claimed FLOPs are conv+linear MACs + 1,280 (conv_head bias)'),
        readme_params_form='train',
        readme_macs_offset=1280,
        variants=MNV4_CONV_COUNTS),
    'MobileNetV4': dict(
        names=('MobileNetV4',),
        source='ChengpengChen/RepGhostNetV2 model/mobilenetv4.py (ARCHITECTURES.md §2.3; same counts as RGv2)',
        note=('the timm mobilenetv4_conv_* models have +1,280 params (head conv without bias + BN); '
              'claimed FLOPs = MACs + 1,280'),
        readme_params_form='train',
        readme_macs_offset=1280,
        variants=MNV4_CONV_COUNTS),
    'RepNeXt': dict(
        names=('RepNeXt', 'RepNext'),
        source='suous/RepNeXt README + counts on the official code (ARCHITECTURES.md §3.1)',
        note=('seed train params include the two distillation heads (head + head_dist); fused = '
              'one Linear head; MACs of the fused model'),
        classifier_kwargs=dict(distillation=True),
        readme_params_form='fused',
        variants={
            'M0': dict(train_params='2,716,480', fused_params='2,333,200', macs='0.388G',
                       readme_params='2.3M', readme_macs='0.4G'),
            'M1': dict(train_params='5,323,316', fused_params='4,829,560', macs='0.822G',
                       readme_params='4.8M', readme_macs='0.8G'),
            'M2': dict(train_params='7,049,082', fused_params='6,473,200', macs='1.111G',
                       readme_params='6.5M', readme_macs='1.1G'),
            'M3': dict(train_params='8,466,560', fused_params='7,818,920', macs='1.339G',
                       readme_params='7.8M', readme_macs='1.3G'),
            'M4': dict(train_params='14,080,480', fused_params='13,342,120', macs='2.289G',
                       readme_params='13.3M', readme_macs='2.3G'),
            'M5': dict(train_params='22,708,860', fused_params='21,737,560', macs='4.544G',
                       readme_params='21.7M', readme_macs='4.5G'),
        }),
    'RepMobile': dict(
        names=('RepMobile',),
        source='zhanghao5201/RepMobile README + counts on the official code (ARCHITECTURES.md §4.1)',
        note=('seed params: classifier without the distillation head (training form; the official code '
              'has no fusion); backbone = stem + layer0-3'),
        classifier_kwargs=dict(distillation=False),
        readme_params_form='train',
        variants={
            'S': dict(train_params='5,719,944', backbone_train_params='3,117,984', macs='0.417G',
                      readme_params='5.7M', readme_macs='0.4G'),
            'M': dict(train_params='8,205,552', backbone_train_params='5,472,520', macs='0.695G',
                      readme_params='8.2M', readme_macs='0.7G'),
            'L': dict(train_params='18,361,624', backbone_train_params='15,497,520', macs='1.374G',
                      readme_params='18.4M', readme_macs='1.4G'),
        }),
}

_UNITS = {'': 1, 'K': 1e3, 'M': 1e6, 'G': 1e9}


def parse_figure(text: str) -> Tuple[float, float]:
    """``'4,073,604'`` -> (4073604, 0); ``'142.39M'`` -> (142.39e6, 0.005e6); ``'4.1M'`` -> (4.1e6, 0.05e6)."""
    m = re.fullmatch(r'\s*([\d,]+)(?:\.(\d+))?\s*([KMG]?)\s*', text)
    if not m:
        raise ValueError(f'bad seed figure {text!r}')
    whole, frac, unit = m.group(1).replace(',', ''), m.group(2) or '', m.group(3)
    scale = _UNITS[unit]
    value = float(f'{whole}.{frac}' if frac else whole) * scale
    if not unit and not frac:
        return value, 0.0
    return value, 0.5 * scale * 10 ** -len(frac)


def matches(ours: Optional[float], seed: str) -> Optional[bool]:
    """Whether our exact count agrees with the seed figure at the figure's precision."""
    if ours is None:
        return None
    value, tol = parse_figure(seed)
    return abs(ours - value) <= tol + 1e-9 * max(value, 1.0)


def table_for(family: str) -> Optional[dict]:
    """The seed table whose ``names`` include ``family`` (case-insensitive), if any."""
    for table in SEED_TABLES.values():
        if family.lower() in (n.lower() for n in table['names']):
            return table
    return None
