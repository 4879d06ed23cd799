"""Build models for the tools (export, benchmark, complexity, fuse_checkpoint): a whole mmdet /
mmseg model from a config, or a bare backbone / classifier from a ``NAME[:ARCH]`` spec.

* The registry scope (``mmdet`` or ``mmseg``) comes from ``cfg.default_scope``; a config without
  one (e.g. a bare ``_base_/models/*.py``) may name it with ``scope=`` or through a
  ``mmdet::`` / ``mmseg::`` path prefix.
* Checkpoints go through mmengine's ``load_checkpoint`` (rep_backbones.mm makes it load safely).
  ``checkpoint=None`` (or ``'none'``) keeps the random initialisation: what smoke tests use.
"""
from __future__ import annotations

import importlib
import os
from typing import Mapping, Optional, Sequence, Tuple, Type, Union

import torch
from torch import Tensor, nn

from rep_backbones.models import BACKBONES
from rep_backbones.models.registry import default_arch

NO_CHECKPOINT = (None, '', 'none', 'None', 'NONE')


def _infer_scope(cfg, config_path: str, scope: Optional[str]) -> str:
    if scope:
        return scope
    if cfg.get('default_scope'):
        return cfg.default_scope
    for prefix in ('mmdet', 'mmseg'):
        if str(config_path).startswith(f'{prefix}::'):
            return prefix
    raise ValueError(f'{config_path}: the config sets no default_scope; pass scope="mmdet" or "mmseg"')


def load_config(config, cfg_options: Optional[dict] = None):
    """``mmengine.Config`` from a path (``mmdet::`` / ``mmseg::`` prefixes allowed) or a Config."""
    from mmengine.config import Config

    import rep_backbones  # noqa: F401  (registers the backbones, safe checkpoint loading)
    cfg = config if isinstance(config, Config) else Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def build_model_from_config(config, checkpoint: Optional[str] = None, device: Union[str, torch.device] = 'cpu',
                            scope: Optional[str] = None, cfg_options: Optional[dict] = None,
                            backbone: Optional[dict] = None, keep_sync_bn: bool = False) -> nn.Module:
    """Build ``cfg.model`` in eval mode on ``device``, optionally loading ``checkpoint``.

    Args:
        config: config file path (``mmdet::…`` allowed) or an ``mmengine.Config``.
        checkpoint: file for mmengine's ``load_checkpoint``; ``None``/``'none'`` = random init.
        device: where the model goes.
        scope: ``'mmdet'`` / ``'mmseg'`` when the config has no ``default_scope``.
        cfg_options: ``Config.merge_from_dict`` overrides (``{'model.backbone.arch': '1.5x'}``).
        backbone: replace ``cfg.model.backbone`` by this dict (e.g. ``dict(type='RepGhostNet',
            arch='1.0x')``); the neck's ``in_channels`` follow the new backbone's ``out_channels``.
        keep_sync_bn: keep the config's SyncBN layers off CUDA too (eval mode needs no process
            group): the model exactly as DDP trains and tests it. By default they become BN there.
    """
    cfg = load_config(config, cfg_options)
    scope = _infer_scope(cfg, config if isinstance(config, str) else '', scope)
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    from mmengine.registry import DefaultScope
    registry = importlib.import_module(f'{scope}.registry').MODELS

    model_cfg = cfg.model
    if backbone is not None:
        model_cfg.backbone = dict(backbone)
        probe = build_from_spec({k: v for k, v in backbone.items() if k != 'init_cfg'})
        neck = model_cfg.get('neck')
        if isinstance(neck, dict) and 'in_channels' in neck:
            neck.in_channels = list(probe.out_channels)
    # Pretrained backbone weights named in the config are not needed when a full checkpoint is
    # loaded, and not available for smoke tests: drop them (the model is evaluated, not trained).
    bb = model_cfg.get('backbone')
    if isinstance(bb, dict) and bb.get('init_cfg') is not None:
        bb.init_cfg = None
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(model_cfg)
    if checkpoint not in NO_CHECKPOINT:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, str(checkpoint), map_location='cpu')
    if not keep_sync_bn and not str(device).startswith('cuda'):
        # SyncBN (the paper configs') is plain BN outside distributed GPU training
        from mmengine.model import revert_sync_batchnorm
        model = revert_sync_batchnorm(model)
    model.cfg = cfg
    return model.to(device).eval()


def parse_backbone_spec(spec: str, table: Optional[Mapping[str, Type[nn.Module]]] = None,
                        fill_default: bool = False) -> dict:
    """``'RepGhostNet:1.0x'`` -> ``dict(type='RepGhostNet', arch='1.0x')``; the one parser of the
    ``NAME[:ARCH]`` specs that the tools take.

    ``table`` is the name -> class table the name must be in (default
    ``rep_backbones.models.BACKBONES``; ``CLASSIFIERS`` for classifiers). Without ``:ARCH`` the dict
    has no ``arch`` (the class default applies) unless ``fill_default``, which writes that default
    in. The arch itself is checked by the class when it is built (its error lists the variants).
    """
    table = BACKBONES if table is None else table
    name, _, arch = str(spec).strip().partition(':')
    if name not in table:
        raise ValueError(f'{spec!r}: unknown name {name!r}; expected NAME[:ARCH] with NAME one of: '
                         f'{", ".join(sorted(table))}')
    if not arch and fill_default:
        arch = default_arch(table[name]) or ''
    return dict(type=name, arch=arch) if arch else dict(type=name)


def is_backbone_spec(text: str) -> bool:
    """Whether ``text`` names a registered backbone (``NAME[:ARCH]``) rather than a config file."""
    if os.path.exists(text):
        return False
    try:
        parse_backbone_spec(text)
    except ValueError:
        return False
    return True


def build_from_spec(spec: Union[str, dict], table: Optional[Mapping[str, Type[nn.Module]]] = None,
                    **kwargs) -> nn.Module:
    """The eval-mode model of a ``NAME[:ARCH]`` spec (or its parsed dict) from ``table``
    (default ``BACKBONES``); ``kwargs`` go to the class."""
    table = BACKBONES if table is None else table
    cfg = parse_backbone_spec(spec, table) if isinstance(spec, str) else dict(spec)
    return table[cfg.pop('type')](**cfg, **kwargs).eval()


def flatten_outputs(out) -> Tuple[Tensor, ...]:
    """Nested tuples/lists of tensors -> flat tuple, in order (what ONNX graph outputs are)."""
    if isinstance(out, Tensor):
        return (out,)
    if isinstance(out, (tuple, list)):
        flat = []
        for item in out:
            flat.extend(flatten_outputs(item))
        return tuple(flat)
    if isinstance(out, dict):
        return flatten_outputs(list(out.values()))
    raise TypeError(f'cannot export an output of type {type(out).__name__}; only (nested) tensors are '
                    'supported (use --backbone-only, or a single-stage detector / segmentor)')


class TensorModeWrapper(nn.Module):
    """``forward(x)`` = the raw outputs of a detector / segmentor (or backbone) as a flat tuple.

    Detectors and segmentors run ``forward(x, mode='tensor')`` (mmdet ``_forward``: backbone + neck
    + head, no anchors / decoding / NMS; mmseg: decode-head logits at 1/4 resolution). ``x`` is the
    already normalised batch (what ``model.data_preprocessor`` produces): preprocessing and
    post-processing stay in Python. ``part='features'`` stops after the neck (``extract_feat``),
    ``part='backbone'`` after the backbone.
    """

    def __init__(self, model: nn.Module, part: str = 'full'):
        super().__init__()
        if part not in ('full', 'features', 'backbone'):
            raise ValueError(f"part must be 'full', 'features' or 'backbone', got {part!r}")
        self.model = model
        self.part = part
        if part == 'full' and hasattr(model, 'rpn_head') and hasattr(model, 'roi_head'):
            raise ValueError(f'{type(model).__name__} is a two-stage detector: its tensor mode needs '
                             'proposals (NMS) and image metadata; export part="features" (backbone + '
                             'neck) or "backbone" instead')

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if self.part == 'backbone':
            out = getattr(self.model, 'backbone', self.model)(x)
        elif self.part == 'features':
            out = self.model.extract_feat(x)
        elif hasattr(self.model, 'data_preprocessor') and hasattr(self.model, 'extract_feat'):
            out = self.model(x, None, mode='tensor')
        else:
            out = self.model(x)
        return flatten_outputs(out)


def shape_tuple(shape: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``H`` or ``(H,)`` -> ``(H, H)``; ``(H, W)`` -> ``(H, W)`` (what ``--shape H [W]`` gives)."""
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape
    raise ValueError(f'--shape takes H [W], got {shape}')
