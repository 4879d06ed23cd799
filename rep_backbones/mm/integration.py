"""Everything that importing ``rep_backbones`` changes in mmengine, in one function.

:func:`integrate` is called once by ``rep_backbones.mm`` (which ``import rep_backbones`` imports when
mmengine is installed). It is idempotent and does exactly four things:

1. registers every plain-PyTorch backbone (``rep_backbones.models.BACKBONES``) and the hooks in the
   ``rep_backbones`` scope, and in mmengine's root registries where the name is free (``registry.py``);
2. installs the safe checkpoint loaders with ``CheckpointLoader.register_scheme``: local files
   (mmengine's reader first, the safe one for what it refuses) and http(s) URLs (hash-verified), and
   allow-lists mmengine's ``HistoryBuffer`` for them (``safe_load.py``);
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
    from .hooks import RepFuseHook, SafeCheckpointHook
    from .registry import HOOKS, MMENGINE_HOOKS, MMENGINE_MODELS, MODELS, register
    from .safe_load import SAFE_CLASSES, load_local, load_url

    for name, cls in BACKBONES.items():
        register(cls, name, scoped=MODELS, root=MMENGINE_MODELS)
    for hook in (RepFuseHook, SafeCheckpointHook):
        register(hook, hook.__name__, scoped=HOOKS, root=MMENGINE_HOOKS)

    add_safe_globals(SAFE_CLASSES)
    # force=True: these prefixes are mmengine's own; every other scheme stays its.
    CheckpointLoader.register_scheme(prefixes='', loader=load_local, force=True)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), loader=load_url, force=True)

    RepBackbone.external_initializer = staticmethod(initialize)

    logger = logging.getLogger('rep_backbones')
    if not any(isinstance(h, _CurrentMMLogger) for h in logger.handlers):
        logger.addHandler(_CurrentMMLogger())
        logger.setLevel(logging.INFO)
        logger.propagate = False
    _done = True
