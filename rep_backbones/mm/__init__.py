"""The thin OpenMMLab layer: registration, hooks, safe checkpoint loading, model building.

Imported automatically by ``import rep_backbones`` when mmengine is installed.
"""
from . import backbones, hooks, safe_load  # noqa: F401  (importing registers)
from .hooks import RepFuseHook, SafeCheckpointHook
from .registry import HOOKS, MODELS

__all__ = ['RepFuseHook', 'SafeCheckpointHook', 'HOOKS', 'MODELS']
