"""Safe checkpoint loading for mmengine 0.10.7 on torch >= 2.6.

mmengine 0.10.7 reads local checkpoints with a bare ``torch.load``; since torch 2.6 that means
``weights_only=True`` and files written by mmengine's Runner fail (they pickle ``HistoryBuffer`` and
numpy objects). Instead of turning ``weights_only`` off for every file, this module provides
:func:`load_checkpoint_source` (:func:`rep_backbones.checkpoint.read_checkpoint` with mmengine's
signature), which ``integration.integrate`` registers as mmengine's loader for local paths and
``http(s)://`` URLs (downloaded into torch hub's cache, sha256 prefix of the name verified, safetensors
read too): plain-data classes are allow-listed, and a file that needs more is refused with a message
naming ``REP_BACKBONES_TRUST_CHECKPOINTS=1``.
Checkpoints that this package's runs write load safely because ``SafeCheckpointHook`` (in
``hooks.py``) stores the message hub's buffers as :class:`DataHistoryBuffer`.
"""
import os.path as osp

from mmengine.logging.history_buffer import HistoryBuffer

from ..checkpoint import is_url, read_checkpoint


class DataHistoryBuffer(HistoryBuffer):
    """A ``HistoryBuffer`` that pickles as plain data.

    ``HistoryBuffer.__getstate__`` adds the class-wide dict of statistics *functions* to the pickled
    state; unpickling those needs ``builtins.getattr`` (``getattr(HistoryBuffer, 'min')``), which no
    safe loader may allow. The default statistics are re-created on load anyway
    (``HistoryBuffer.__setstate__``), and custom ones are registered class-wide by the code that
    defines them, so leaving the functions out loses nothing.
    """

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop('statistics_methods', None)
        return state

    @classmethod
    def from_buffer(cls, buffer: HistoryBuffer) -> 'DataHistoryBuffer':
        new = cls.__new__(cls)
        new.__dict__.update({k: v for k, v in buffer.__dict__.items() if k != 'statistics_methods'})
        return new


# Allow-listed for read_checkpoint by rep_backbones.mm.integration.integrate().
SAFE_CLASSES = (HistoryBuffer, DataHistoryBuffer)


def load_checkpoint_source(filename, map_location=None):
    """mmengine loader for local paths and http(s) URLs: :func:`read_checkpoint` with mmengine's
    signature (a missing local file raises ``CheckpointNotFoundError``, a ``FileNotFoundError``)."""
    if not is_url(filename):
        filename = osp.expanduser(filename)
    return read_checkpoint(filename, map_location=map_location)
