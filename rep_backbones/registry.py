"""Registration of the package's backbones and hooks with OpenMMLab's registries.

Classes are registered in mmengine's *root* registries, the parent of mmdet's, mmseg's and
mmpretrain's, so ``backbone=dict(type='RepGhostNet')`` resolves from an mmdet or an mmseg config
with no scope prefix. The child registries below (scope ``rep_backbones``) also make the explicit
form ``type='rep_backbones.RepGhostNet'`` work, as OpenMMLab packages do.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='rep_backbones', locations=['rep_backbones.mm'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='rep_backbones', locations=['rep_backbones.mm'])


def register(registries, cls, name=None):
    """Register ``cls`` (under ``name``) in each of ``registries``."""
    for registry in registries:
        registry.register_module(name=name or cls.__name__, module=cls, force=True)
    return cls
