"""Everything that importing ``rep_backbones`` changes in mmengine, in one function.

:func:`integrate` is called once by ``rep_backbones.mm`` (which ``import rep_backbones`` imports when
mmengine is installed). It is idempotent and does exactly four things:

1. registers every plain-PyTorch backbone (``rep_backbones.models.BACKBONES``) and the hooks in
   mmengine's root registries and in the ``rep_backbones`` scope (``rep_backbones/registry.py``);
2. registers the safe checkpoint loader (local files and http(s) URLs) with
   ``CheckpointLoader.register_scheme`` and
   allow-lists mmengine's ``HistoryBuffer`` for it (``safe_load.py``);
3. gives the backbones mmengine's ``initialize`` for ``init_cfg`` types other than ``Pretrained``;
4. forwards the ``rep_backbones`` logger (checkpoint load reports) to the current ``MMLogger``.
"""
from __future__ import annotations

import logging

from mmengine.logging import MMLogger, print_log

_done = False


class _CurrentMMLogger(logging.Handler):
    """Forward ``logging.getLogger('rep_backbones')`` records to the current MMLogger."""

    def emit(self, record: logging.LogRecord) -> None:
        if MMLogger.check_instance_created('mmengine') or MMLogger._instance_dict:
            print_log(self.format(record), logger='current', level=record.levelno)


def integrate() -> None:
    """Apply the four changes listed in the module docstring (once)."""
    global _done
    if _done:
        return
    from mmengine.model import initialize
    from mmengine.runner.checkpoint import CheckpointLoader

    from ..checkpoint import add_safe_globals
    from ..models import BACKBONES
    from ..models.base import RepBackbone
    from ..registry import HOOKS, MMENGINE_HOOKS, MMENGINE_MODELS, MODELS, register
    from .hooks import RepFuseHook, SafeCheckpointHook
    from .safe_load import SAFE_CLASSES, load_checkpoint_source

    for name, cls in BACKBONES.items():
        register((MMENGINE_MODELS, MODELS), cls, name)
    for hook in (RepFuseHook, SafeCheckpointHook):
        register((MMENGINE_HOOKS, HOOKS), hook)

    add_safe_globals(SAFE_CLASSES)
    CheckpointLoader.register_scheme(prefixes=('', 'http://', 'https://'), loader=load_checkpoint_source,
                                     force=True)

    RepBackbone.external_initializer = staticmethod(initialize)

    logger = logging.getLogger('rep_backbones')
    if not any(isinstance(h, _CurrentMMLogger) for h in logger.handlers):
        logger.addHandler(_CurrentMMLogger())
        logger.setLevel(logging.INFO)
        logger.propagate = False
    _done = True
