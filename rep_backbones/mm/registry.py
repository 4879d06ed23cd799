"""The package's OpenMMLab registries, and how its classes enter mmengine's.

Every backbone and hook is registered twice:

* in the ``rep_backbones`` scope (the child registries below), so the explicit form
  ``type='rep_backbones.RepGhostNet'`` always resolves, from mmdet, mmseg or mmpretrain configs;
* in mmengine's *root* registries, the parent of mmdet's, mmseg's and mmpretrain's, so the short form
  ``type='RepGhostNet'`` resolves with no scope prefix -- but only where the name is free. A name another
  package already registered there is left to it (never ``force=True``), and a warning says to use the
  scoped form.
"""
from __future__ import annotations

from mmengine.logging import print_log
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

SCOPE = 'rep_backbones'
MODELS = Registry('model', parent=MMENGINE_MODELS, scope=SCOPE, locations=['rep_backbones.mm'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope=SCOPE, locations=['rep_backbones.mm'])


def register(cls: type, name: str, scoped: Registry, root: Registry) -> bool:
    """Register ``cls`` as ``name`` in ``scoped`` and, if the name is free there, in ``root``.

    Idempotent. Returns whether the short name resolves to ``cls`` in ``root``."""
    if scoped.module_dict.get(name) is not cls:
        scoped.register_module(name=name, module=cls)
    owner = root.module_dict.get(name)
    if owner is None:
        root.register_module(name=name, module=cls)
        return True
    if owner is not cls:
        print_log(f"{root.name} registry: '{name}' already belongs to {owner.__module__}.{owner.__qualname__}; "
                  f"it is left as it is. Build this package's class with type='{scoped.scope}.{name}'.",
                  logger='current', level=30)
        return False
    return True
