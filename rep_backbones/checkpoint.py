"""Reading checkpoint files safely and finding the backbone's weights inside them.

Files are read with ``torch.load(weights_only=True)`` plus a short allow-list of plain-data classes
that real checkpoints contain (timm/DeiT training dicts pickle an ``argparse.Namespace``; mmengine
runs pickle numpy scalars and ``HistoryBuffer``). Anything else is refused with
:class:`UntrustedCheckpointError`, unless the caller says the file is trusted
(``trust=True`` or ``REP_BACKBONES_TRUST_CHECKPOINTS=1``), which unpickles it in full.
"""
from __future__ import annotations

import argparse
import collections
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional

import numpy as np
import torch

TRUST_ENV = 'REP_BACKBONES_TRUST_CHECKPOINTS'

# Wrapper keys of released checkpoints, in the order they are tried when none is named:
# timm training dicts keep the EMA weights (what the official accuracies were measured with) in
# 'state_dict_ema'; mmengine and timm use 'state_dict'; DeiT-style repos (RepNeXt, RepMobile) 'model'.
WRAPPER_KEYS = ('state_dict_ema', 'state_dict', 'model', 'module')


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or does not fit the model."""


class UntrustedCheckpointError(CheckpointError):
    """The file needs full unpickling (arbitrary code execution) and was not marked trusted."""


def _safe_globals() -> list:
    allowed = [argparse.Namespace, collections.OrderedDict, np.ndarray, np.dtype,
               np._core.multiarray._reconstruct, np._core.multiarray.scalar]
    allowed += [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith('DType')]
    allowed += list(_EXTRA_SAFE_GLOBALS)
    return allowed


# Filled by integrations (e.g. rep_backbones.mm adds mmengine's HistoryBuffer) so that this module
# needs no import of them.
_EXTRA_SAFE_GLOBALS: List[object] = []


def add_safe_globals(objs: Iterable[object]) -> None:
    """Allow more plain-data classes in :func:`read_checkpoint` (no callables that act on load)."""
    for obj in objs:
        if obj not in _EXTRA_SAFE_GLOBALS:
            _EXTRA_SAFE_GLOBALS.append(obj)


def is_trusted_by_env() -> bool:
    return os.environ.get(TRUST_ENV, '').strip().lower() in ('1', 'true', 'yes')


def read_checkpoint(path: str, map_location='cpu', trust: Optional[bool] = None):
    """Load a checkpoint file: safe by default, full unpickling only when trusted."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f'checkpoint path must be a str, got {type(path).__name__}')
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint file not found: {path!r}')
    if trust is None:
        trust = is_trusted_by_env()
    try:
        if trust:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Weights only load failed' not in str(err):
            raise CheckpointError(f'checkpoint file {path!r} is corrupt: {err}') from err
        raise UntrustedCheckpointError(
            f'refused to unpickle {path!r}: it holds objects outside the safe allow-list, and full '
            f'unpickling can run arbitrary code. If you trust this file, set {TRUST_ENV}=1 (or pass '
            f'trust=True). Details from torch.load: {str(err).splitlines()[-1] if str(err) else err}'
        ) from err
    except (zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as err:
        raise CheckpointError(f'checkpoint file {path!r} is corrupt or truncated: {err}') from err


def unwrap_state_dict(obj, checkpoint_key: Optional[str] = None) -> tuple:
    """Return ``(state_dict, key_used)`` from a release file's top-level object.

    ``checkpoint_key`` names the wrapper key; by default the first of :data:`WRAPPER_KEYS` found,
    or the object itself when it already is a flat ``name -> tensor`` mapping.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'checkpoint holds a {type(obj).__name__}, not a dict of tensors '
                              '(TorchScript archives are not state dicts)')
    if checkpoint_key is not None:
        if checkpoint_key not in obj:
            raise CheckpointError(f'checkpoint has no key {checkpoint_key!r}; '
                                  f'top-level keys: {sorted(obj)[:10]}')
        return obj[checkpoint_key], checkpoint_key
    for key in WRAPPER_KEYS:
        value = obj.get(key)
        if isinstance(value, Mapping) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            return value, key
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None
    raise CheckpointError('no state dict found in checkpoint: expected a flat name->tensor dict or one '
                          f'under {WRAPPER_KEYS}; top-level keys: {sorted(map(str, obj))[:10]}')


def strip_prefixes(state_dict: Mapping[str, torch.Tensor], prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Drop DataParallel's ``module.`` and keep only ``prefix`` keys (prefix removed) if given."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith('module.'):
            key = key[len('module.'):]
        out[key] = value
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        selected = {k[len(prefix):]: v for k, v in out.items() if k.startswith(prefix)}
        if not selected:
            raise CheckpointError(f'no key in the checkpoint starts with prefix {prefix!r}; '
                                  f'first keys: {list(out)[:5]}')
        out = selected
    return out


@dataclass
class LoadReport:
    """What happened when a checkpoint was loaded into a backbone."""
    source: str
    wrapper_key: Optional[str]
    loaded: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)   # classifier / head keys the backbone has no use for
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)

    def summary(self) -> str:
        where = f"['{self.wrapper_key}']" if self.wrapper_key else ''
        lines = [f'loaded {len(self.loaded)} tensors from {self.source}{where}']
        if self.ignored:
            lines.append(f'ignored {len(self.ignored)} head keys: {_abbrev(self.ignored)}')
        for name in ('missing', 'unexpected', 'mismatched'):
            keys = getattr(self, name)
            if keys:
                lines.append(f'{name} {len(keys)} keys: {_abbrev(keys)}')
        return '; '.join(lines)


def _abbrev(keys: List[str], n: int = 6) -> str:
    return ', '.join(keys[:n]) + (f', ... (+{len(keys) - n})' if len(keys) > n else '')


def match_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], report: LoadReport,
                     is_head_key: Callable[[str], bool], strict: bool = True) -> Dict[str, torch.Tensor]:
    """Compare ``state_dict`` with the model's, fill ``report``; raise on any mismatch when strict."""
    own = model.state_dict()
    usable = {}
    for key, value in state_dict.items():
        if key not in own:
            (report.ignored if is_head_key(key) else report.unexpected).append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append(f'{key} {tuple(value.shape)} vs {tuple(own[key].shape)}')
        else:
            usable[key] = value
    report.loaded = list(usable)
    report.missing = [k for k in own if k not in usable and not k.endswith('num_batches_tracked')]
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise CheckpointError(f'checkpoint does not fit {type(model).__name__}: {report.summary()}')
    return usable
