"""RepGhostNetV2 (Chen et al.) S/M/L: backbone and ImageNet classifier.

RepGhostNetV2 is MobileNetV4 (``mobilenetv4.py``: variant table, blocks, builder, official-layout
converter) with RepGhost's shortcut placement: the *start* depthwise conv of every UIB that follows
another UIB is moved to the *end* of that previous UIB (``dw_end``), inside its residual. Parameters
and MACs are unchanged; keys are MobileNetV4's, and the official repository's ``layers.*`` layout is
converted on load.
"""
from __future__ import annotations

from typing import List

from .base import arch_aliases
from .mobilenetv4 import ARCHS, PAPER_COUNTS, SIZE_WORDS, UIB, MobileNetV4, MobileNetV4Classifier
from .registry import register_backbone, register_classifier


def repghost_shortcuts(stages: List[list]) -> List[list]:
    """RepGhostNetV2's specs from MobileNetV4's: each UIB's start DW moves to the end of the preceding
    UIB (across stage boundaries too), unless it carries the stride or no UIB precedes it."""
    flat = [(s, b, spec) for s, stage in enumerate(stages) for b, spec in enumerate(stage)]
    out = [list(stage) for stage in stages]
    for (ps, pb, _), (s, b, spec) in zip(flat[:-1], flat[1:]):
        prev = out[ps][pb]
        if not (isinstance(spec, UIB) and isinstance(prev, UIB) and spec.start):
            continue
        if spec.mid or spec.stride == 1:   # the start DW does not carry the stride: it can move
            out[ps][pb] = prev._replace(end=spec.start)
            out[s][b] = spec._replace(start=0)
    return out


@register_backbone
class RepGhostNetV2(MobileNetV4):
    """RepGhostNetV2 backbone (S/M/L): MobileNetV4 conv model with RepGhost-style shortcuts (start DWs
    moved into the preceding residual as ``dw_end``). Arguments: see :class:`MobileNetV4`; loads the official
    repository's checkpoints (``layers.*`` layout, converted on load)."""
    net_name = 'RepGhostNetV2'
    arch_aliases = arch_aliases(ARCHS, prefixes=('repghostnetv2_',), extra={
        alias: name for name, size in SIZE_WORDS.items() for alias in (size, f'repghostnetv2_{size}')})
    default_stem_1x1_act = False

    @classmethod
    def stage_specs(cls, arch: str) -> List[list]:
        return repghost_shortcuts(ARCHS[arch].stages)


@register_classifier('RepGhostNetV2')
class RepGhostNetV2Classifier(MobileNetV4Classifier, RepGhostNetV2):
    """RepGhostNetV2 ImageNet classifier (official head); parameters equal the official model's."""
    timm_prefix = 'repghostnetv2'
    paper_table = dict(
        source='ChengpengChen/RepGhostNetV2 README.md + exact counts of the official model code',
        note='no re-parameterization in the paper: its params are the training form incl. BN; its claimed FLOPs '
             'are conv+linear MACs + 1,280 (conv_head bias)', readme_params_form='train', readme_macs_offset=1280,
        variants=PAPER_COUNTS)

    @classmethod
    def timm_release(cls, arch: str) -> dict:
        # The repository has released no weights (its readme: "TODO: release checkpoints").
        return dict(first_conv='conv_stem', classifier='classifier', input_size=ARCHS[arch].img_size,
                    origin='https://github.com/ChengpengChen/RepGhostNetV2', license='mit')

