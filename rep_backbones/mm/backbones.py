"""Register every pure-PyTorch backbone (``rep_backbones.models.BACKBONES``) as an mm model.

The classes are registered as they are: they already take mm-style arguments. Two small bridges:
``init_cfg`` entries other than ``Pretrained`` (e.g. ``Kaiming``) go to mmengine's ``initialize``,
and the backbones' log messages (checkpoint load reports) go to the current MMLogger.
"""
import logging

from mmengine.logging import MMLogger, print_log
from mmengine.model import initialize

from ..models import BACKBONES
from ..models.base import RepBackbone
from .registry import MMENGINE_MODELS, MODELS, register


class _CurrentMMLogger(logging.Handler):
    """Forward ``logging.getLogger('rep_backbones')`` records to the current MMLogger."""

    def emit(self, record: logging.LogRecord) -> None:
        if MMLogger.check_instance_created('mmengine') or MMLogger._instance_dict:
            print_log(self.format(record), logger='current', level=record.levelno)


_logger = logging.getLogger('rep_backbones')
if not any(isinstance(h, _CurrentMMLogger) for h in _logger.handlers):
    _logger.addHandler(_CurrentMMLogger())
    _logger.setLevel(logging.INFO)
    _logger.propagate = False

RepBackbone.external_initializer = staticmethod(initialize)

for _name, _cls in BACKBONES.items():
    register((MMENGINE_MODELS, MODELS), _cls, _name)
