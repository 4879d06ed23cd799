"""Safe checkpoint loading for mmengine 0.10.7 on torch >= 2.6.

mmengine 0.10.7 reads local checkpoints with a bare ``torch.load``; since torch 2.6 that means
``weights_only=True``, and the files mmengine's own Runner writes fail (they pickle ``HistoryBuffer``
and numpy objects). ``integration.integrate`` installs the two loaders below with
``CheckpointLoader.register_scheme``, the one place this package changes how mmengine reads files:

* :func:`load_local` (local paths) calls mmengine's own reader first and uses this package's safe
  reader (:func:`rep_backbones.checkpoint.read_checkpoint`) only for a file that one refuses: Runner
  checkpoints (plain-data classes allow-listed; a file that needs more is refused with a message naming
  ``REP_BACKBONES_TRUST_CHECKPOINTS=1``), safetensors files, and damaged files (named and described).
  Files mmengine reads itself come back exactly as mmengine returns them.
* :func:`load_url` (``http(s)://``): downloaded once into torch hub's cache, with the sha256 prefix
  of the file name verified (mmengine's reader checks nothing), then read safely.

Other schemes (``s3://``, ``open-mmlab://``, ...) stay mmengine's. Checkpoints that this package's
runs write load safely because ``SafeCheckpointHook`` (in ``hooks.py``) stores the message hub's
buffers as :class:`DataHistoryBuffer`.
"""
import os.path as osp
from typing import Optional

from mmengine.logging import print_log
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import load_from_local as mmengine_load_from_local

from ..checkpoint import read_checkpoint


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


def load_local(filename, map_location=None):
    """mmengine loader for local paths: mmengine's own reader, else (for a file it refuses or cannot
    read) :func:`read_checkpoint`. A missing file is mmengine's ``FileNotFoundError``."""
    try:
        checkpoint = mmengine_load_from_local(filename, map_location)
    except FileNotFoundError:
        raise
    except Exception:  # weights_only refusal (Runner files), safetensors, damage: read_checkpoint names it
        checkpoint = read_checkpoint(osp.expanduser(filename), map_location=map_location)
    _log_origin(filename, checkpoint)
    return checkpoint


def load_url(filename, map_location=None):
    """mmengine loader for ``http(s)://`` URLs: :func:`read_checkpoint` (hash-verified, cached)."""
    checkpoint = read_checkpoint(filename, map_location=map_location)
    _log_origin(filename, checkpoint)
    return checkpoint


def _log_origin(filename, checkpoint) -> None:
    """Files from mmdet 2.x / mmseg 0.x say so in the log (:func:`legacy_origin`)."""
    origin = legacy_origin(checkpoint)
    if origin:
        print_log(f'{filename}: written by {origin}. Loaded as it is: the neck and head keys of RetinaNet, '
                  'Mask R-CNN and Semantic FPN did not change in mmdet 3.x / mmseg 1.x (their own model zoos '
                  'serve 2.x / 0.x files for them), and a backbone of this package converts its official key '
                  'layout itself where it differs (logged when it does).', logger='current')


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
