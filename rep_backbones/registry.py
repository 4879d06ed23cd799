"""Scope ``rep_backbones`` for mmengine (``type='rep_backbones.RepGhostNet'`` imports this module)."""
from .mm.registry import HOOKS, MODELS  # noqa: F401
