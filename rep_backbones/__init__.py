"""rep_backbones: structurally re-parameterizable CNN backbones for mmdetection / mmsegmentation.

``rep_backbones.models`` and ``rep_backbones.reparam`` are plain PyTorch. When mmengine is
installed, importing the package also registers the backbones and ``RepFuseHook`` with the
OpenMMLab registries (``custom_imports=dict(imports=['rep_backbones'])`` is all a config needs).
"""
from . import models, reparam, timm_models  # noqa: F401  (timm_models registers the timm model names)
from .checkpoint import CheckpointError, UntrustedCheckpointError
from .fusion import FuseReport, fuse, fuse_with_report
from .models import build_backbone, build_classifier
from .version import __version__

__all__ = ['fuse', 'fuse_with_report', 'FuseReport', 'build_backbone', 'build_classifier', 'models', 'reparam',
           'CheckpointError', 'UntrustedCheckpointError', '__version__']

try:
    import mmengine  # noqa: F401
except ImportError:  # plain PyTorch use: nothing to register
    pass
else:
    from . import mm  # noqa: F401  (registers backbones, hooks, safe checkpoint loading)
