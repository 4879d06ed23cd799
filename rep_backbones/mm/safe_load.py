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
from typing import Optional

from mmengine.logging import print_log
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
    signature (a missing local file raises ``CheckpointNotFoundError``, a ``FileNotFoundError``).
    Files from mmdet 2.x / mmseg 0.x say so in the log (:func:`legacy_origin`)."""
    if not is_url(filename):
        filename = osp.expanduser(filename)
    checkpoint = read_checkpoint(filename, map_location=map_location)
    origin = legacy_origin(checkpoint)
    if origin:
        print_log(f'{filename}: written by {origin}. Loaded as it is: the neck and head keys of RetinaNet, '
                  'Mask R-CNN and Semantic FPN did not change in mmdet 3.x / mmseg 1.x (their own model zoos '
                  'serve 2.x / 0.x files for them), and a backbone of this package converts its official key '
                  'layout itself where it differs (logged when it does).', logger='current')
    return checkpoint


# ``meta`` keys that the mmcv 1.x runners of mmdet 2.x / mmseg 0.x write, and the major versions
# whose key layouts this package reads as they are.
LEGACY_VERSIONS = {'mmdet_version': ('mmdet', '2.'), 'mmseg_version': ('mmseg', '0.')}


def legacy_origin(checkpoint) -> Optional[str]:
    """``'mmdet 2.28.2 (mmcv 1.7.1)'`` for a checkpoint written by mmdet 2.x / mmseg 0.x, else None."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict):
        return None
    for key, (name, major) in LEGACY_VERSIONS.items():
        version = str(meta.get(key, ''))
        if version.startswith(major):
            mmcv = meta.get('mmcv_version')
            return f'{name} {version}' + (f' (mmcv {mmcv})' if mmcv else '')
    return None
