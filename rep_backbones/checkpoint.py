"""Reading checkpoint files safely and finding the backbone's weights inside them.

Sources (:func:`read_checkpoint`): a local path, or an ``http(s)://`` URL that is downloaded once into
torch hub's cache (``<torch.hub.get_dir()>/checkpoints/<file name>``; a sha256 prefix in the file name,
torch's ``name-<8+ hex>.ext`` convention, is verified) unless ``$REP_BACKBONES_WEIGHTS_DIR`` holds a
file of that name. Formats: ``torch.save`` files (zip or legacy) and ``.safetensors``. The format is
told by the file's bytes, so anything else (empty, text, TorchScript, a foreign zip or pickle,
truncated, a zip member failing its CRC) is refused with a :class:`CheckpointError` that names the
file and says what it looks like.

``torch.save`` files are read with ``torch.load(weights_only=True)`` plus a short allow-list of
plain-data classes that real checkpoints contain (timm/DeiT training dicts pickle an
``argparse.Namespace``; mmengine runs pickle numpy scalars and ``HistoryBuffer``). Anything else is
refused with :class:`UntrustedCheckpointError`, unless the caller says the file is trusted
(``trust=True`` or ``REP_BACKBONES_TRUST_CHECKPOINTS=1``), which unpickles it in full.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import http
import http.client
import logging
import os
import pickle
import pickletools
import re
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional
from urllib.parse import urlparse

import numpy as np
import safetensors
import safetensors.torch
import torch

TRUST_ENV = 'REP_BACKBONES_TRUST_CHECKPOINTS'
WEIGHTS_DIR_ENV = 'REP_BACKBONES_WEIGHTS_DIR'
logger = logging.getLogger('rep_backbones')

# Wrapper keys of released checkpoints, in the order they are tried when none is named:
# timm training dicts keep the EMA weights (what the official accuracies were measured with) in
# 'state_dict_ema'; mmengine and timm use 'state_dict'; DeiT-style repos (RepNeXt, RepMobile) 'model'.
WRAPPER_KEYS = ('state_dict_ema', 'state_dict', 'model', 'module')

# torch.hub's file-name convention: 'name-<first 8 or more hex digits of the sha256>.ext' (the last
# '-' part of the name, before its extensions), as in 'resnet18-f37072fd.pth' or OpenMMLab's
# 'repvgg-A0_8xb32_in1k_20221213-60ae8e23.pth'.
HASH_IN_NAME = re.compile(r'-([a-f0-9]{8,64})\.[^-]*$')
# A legacy (non-zip) torch.save file starts with the pickled magic number 0x1950a86a20f9469cfc6c
# (pickle protocol 2, LONG1 opcode of 10 bytes); any other pickle is not a torch.save file.
_LEGACY_TORCH_HEAD = b'\x80\x02\x8a\x0a' + (0x1950a86a20f9469cfc6c).to_bytes(10, 'little')
_PICKLE_OPCODES = {ord(op.code) for op in pickletools.opcodes}
# Formats that weights are often mistaken for, by their leading bytes.
_OTHER_FORMATS = {b'\x1f\x8b': 'gzip-compressed (a .gz / .tar.gz download?): unpack it first',
                  b'\x89HDF\r\n\x1a\n': 'an HDF5 file (Keras / TensorFlow weights?)',
                  b'\x93NUMPY': 'a NumPy .npy array'}


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or does not fit the model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The local checkpoint file does not exist (also a ``FileNotFoundError``)."""


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


def is_url(source: str) -> bool:
    """Whether a checkpoint source is downloaded (``http://`` or ``https://``) rather than a path."""
    return urlparse(os.fspath(source)).scheme in ('http', 'https')


def read_checkpoint(path: str, map_location='cpu', trust: Optional[bool] = None) -> dict:
    """Load a checkpoint (local path or ``http(s)://`` URL, torch.save or safetensors) into a dict.

    Safe by default; full unpickling only when trusted. Raises :class:`CheckpointError` naming the
    file (and the URL it came from) when the source is missing, not a checkpoint, or corrupt.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f'checkpoint path must be a str, got {type(path).__name__}')
    source = os.fspath(path)
    local = resolve_checkpoint_path(source)
    if trust is None:
        trust = is_trusted_by_env()
    try:
        return _load_file(local, map_location, trust)
    except UntrustedCheckpointError:
        raise
    except CheckpointError as err:
        if local == source:
            raise
        raise CheckpointError(f'{err} (local copy of {source}: delete or replace it)') from err


def resolve_checkpoint_path(source: str) -> str:
    """The local file for ``source``: a path as given; for a URL, ``$REP_BACKBONES_WEIGHTS_DIR/<file
    name>`` when that file exists, else ``<torch hub dir>/checkpoints/<file name>``, downloaded and
    verified on first use (see :func:`download_checkpoint`)."""
    source = os.fspath(source)
    if not is_url(source):
        return source
    name = os.path.basename(urlparse(source).path)
    if not name:
        raise CheckpointError(f'checkpoint URL {source!r} has no file name in its path')
    local_dir = os.environ.get(WEIGHTS_DIR_ENV)
    if local_dir:
        local = os.path.join(os.path.expanduser(local_dir), name)
        if os.path.isfile(local):
            return local
    cached = os.path.join(torch.hub.get_dir(), 'checkpoints', name)
    if not os.path.isfile(cached):
        download_checkpoint(source, cached)
    return cached


def download_checkpoint(url: str, dst: str, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dst`` atomically: into a temporary file beside ``dst`` that must have the
    announced Content-Length (``urllib`` returns a dropped connection as a short read, and
    ``torch.hub.download_url_to_file`` keeps such a file), the sha256 prefix that the file name
    carries by torch hub's ``name-<hex>.ext`` convention, and a complete checkpoint format; then
    renamed. On any failure nothing is left under ``dst``. ``timeout``: seconds without data."""
    os.makedirs(os.path.dirname(dst) or '.', exist_ok=True)
    match = HASH_IN_NAME.search(os.path.basename(dst))
    tmp = f'{dst}.{uuid.uuid4().hex}.download'
    logger.info('downloading %s to %s', url, dst)
    try:
        sha256 = hashlib.sha256()
        request = urllib.request.Request(url, headers={'User-Agent': 'rep_backbones'})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, 'wb') as out:
            announced = response.headers.get('Content-Length')
            for chunk in iter(lambda: response.read(1 << 20), b''):
                out.write(chunk)
                sha256.update(chunk)
            received = out.tell()
        if announced is not None and received != int(announced):
            raise CheckpointError(f'the download of {url} stopped after {received} of {announced} bytes '
                                  '(connection dropped?); nothing was cached, try again')
        if match and not sha256.hexdigest().startswith(match.group(1)):
            raise CheckpointError(f'the download of {url} has sha256 {sha256.hexdigest()}, which does not '
                                  f'start with {match.group(1)} as its file name says: a damaged or different '
                                  'file; nothing was cached. (If that part of the name is not a hash, '
                                  f'download the file yourself and put it in ${WEIGHTS_DIR_ENV}.)')
        _sniff_format(tmp, f'the download of {url}')
        os.replace(tmp, dst)
    except CheckpointError:
        raise
    except (OSError, http.client.HTTPException) as err:  # HTTPError, URLError, timeouts, bad responses
        raise CheckpointError(
            f'could not download checkpoint {url}: {_download_failure(err)}. To use a local copy '
            f'instead, put the file in the folder named by ${WEIGHTS_DIR_ENV} (checked first) or at '
            f"{dst}, or give its local path as the checkpoint (init_cfg['checkpoint'], load_from).") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _download_failure(err: Exception) -> str:
    """An HTTP error with its standard phrase (servers' free-text reasons vary), else the error."""
    if isinstance(err, urllib.error.HTTPError):
        try:
            return f'HTTP Error {err.code}: {http.HTTPStatus(err.code).phrase}'
        except ValueError:  # a non-standard status code
            pass
    return str(err)


def _load_file(path: str, map_location, trust: bool) -> dict:
    label = f'checkpoint file {path!r}'
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f'checkpoint file not found: {path!r}')
    if not os.path.isfile(path):
        raise CheckpointError(f'{label} is a directory or a special file, not a checkpoint file')
    if _sniff_format(path, label) == 'safetensors':
        obj = _load_safetensors(path, label, map_location)
    else:
        obj = _torch_load(path, label, map_location, trust)
    if not isinstance(obj, Mapping):
        what = ('a whole pickled model; save its state_dict() instead' if isinstance(obj, torch.nn.Module)
                else 'not a state dict (name -> tensor) or a training checkpoint that wraps one')
        raise CheckpointError(f'{label} holds a {type(obj).__name__}, {what}')
    return obj


def _sniff_format(path: str, label: str) -> str:
    """``'torch'`` (torch.save: zip or legacy pickle) or ``'safetensors'``, told by the file's bytes;
    anything else raises :class:`CheckpointError` saying what the file looks like. A zip's members must
    pass their CRC check (torch.load does not check it: damaged weights would load silently; the check
    costs about 0.03 s per 100 MB) and a safetensors header must cover the file."""
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        head = f.read(64)
    if size == 0:
        raise CheckpointError(f'{label} is empty (0 bytes), not a checkpoint: an interrupted copy or download?')
    if head.startswith(b'PK\x03\x04'):
        _check_torch_zip(path, label, size)
        return 'torch'
    if head.startswith(_LEGACY_TORCH_HEAD):
        return 'torch'
    header_len = int.from_bytes(head[:8], 'little')
    if size >= 10 and 2 <= header_len <= size - 8 and head[8:9] == b'{':
        _check_safetensors(path, label)
        return 'safetensors'
    if head[:1] == b'\x80' and 2 <= head[1] <= 5:
        raise CheckpointError(f'{label} is a Python pickle but not a torch.save file (no torch magic '
                              'number); convert it with torch.save(state_dict, path)')
    text = _as_text(head)
    if text is not None:
        hint = (': a Git LFS pointer, run `git lfs pull`' if text.startswith('version https://git-lfs')
                else ': an HTML page (a login or error page saved instead of the file?)'
                if text.lstrip().lower().startswith(('<!doctype html', '<html')) else '')
        raise CheckpointError(f'{label} is a text file (starts with {text.splitlines()[0][:60]!r}), '
                              f'not a checkpoint{hint}')
    known = next((what for magic, what in _OTHER_FORMATS.items() if head.startswith(magic)), None)
    if known:
        raise CheckpointError(f'{label} is {known}, not a checkpoint')
    raise CheckpointError(f'{label} is not a checkpoint: neither a torch.save file (zip or pickle) nor '
                          f'safetensors; {size} bytes starting with {head[:12].hex(" ")}')


def _check_torch_zip(path: str, label: str, size: int) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise CheckpointError(f'{label} starts like a torch.save zip archive but is truncated or corrupt '
                              f'({size} bytes; {err}): copy or download it again') from err
    if bad is not None:
        raise CheckpointError(f'{label} is corrupt: member {bad!r} of its zip archive fails its CRC check '
                              '(damaged on disk or in transfer); copy or download it again')
    if any(name.endswith('constants.pkl') for name in names):
        raise CheckpointError(f'{label} is a TorchScript archive (torch.jit.save), a compiled model, not a '
                              'checkpoint: load it with torch.jit.load, or save the state_dict() of the model')
    if not any(name == 'data.pkl' or name.endswith('/data.pkl') for name in names):
        raise CheckpointError(f'{label} is a zip archive but not a torch.save file (no data.pkl); '
                              f'members: {names[:5]}')


def _as_text(head: bytes) -> Optional[str]:
    """``head`` decoded when it is printable UTF-8 (a multi-byte character cut at the end allowed)."""
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:
            return None
        text = head[:err.start].decode('utf-8')
    return text if text.strip() and all(c.isprintable() or c in '\t\r\n' for c in text) else None


def _check_safetensors(path: str, label: str) -> None:
    """Parse the header (the data it lists must cover the file exactly), reading no tensor."""
    try:
        with safetensors.safe_open(path, framework='pt'):
            pass
    except Exception as err:  # safetensors raises its own SafetensorError type
        raise CheckpointError(f'{label} is a corrupt or truncated safetensors file: {err}') from err


def _load_safetensors(path: str, label: str, map_location) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file as a flat dict; its ``__metadata__`` strings are not kept."""
    if map_location is None:
        map_location = 'cpu'
    if not isinstance(map_location, (str, torch.device)):
        raise ValueError(f'{label} is a safetensors file: map_location must be a device, '
                         f'got {type(map_location).__name__}')
    try:
        return safetensors.torch.load_file(path, device=str(map_location))
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError) types
        raise CheckpointError(f'{label} is a corrupt or truncated safetensors file: {err}') from err


def _weights_only_reason(message: str) -> str:
    """The first sentence of the cause in torch's "Weights only load failed" message."""
    found = re.search(r'WeightsUnpickler error:\s*(.+)', message)
    return re.split(r'\.\s', found.group(1))[0] if found else message.strip().splitlines()[-1]


def _torch_load(path: str, label: str, map_location, trust: bool):
    try:
        if trust:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Weights only load failed' not in str(err):
            raise CheckpointError(f'{label} is corrupt or truncated: {err}') from err
        reason = _weights_only_reason(str(err))
        opcode = re.match(r'Unsupported operand (\d+)', reason)
        if opcode and int(opcode.group(1)) not in _PICKLE_OPCODES:  # damaged bytes, not a pickle feature
            raise CheckpointError(f'{label} is corrupt or truncated: the unpickler met an invalid byte '
                                  f'({reason})') from err
        raise UntrustedCheckpointError(
            f'refused to unpickle {path!r}: it holds objects outside the safe allow-list (or pickle '
            'features the safe loader does not read), and full unpickling can run arbitrary code. If '
            f'you trust this file, set {TRUST_ENV}=1 (or pass trust=True). Reason: {reason}') from err
    except Exception as err:  # a damaged pickle makes the unpickler fail in many ways (EOFError, IndexError, ...)
        detail = f'{type(err).__name__}: {err}' if str(err) else f'{type(err).__name__}: the data ends early'
        raise CheckpointError(f'{label} is corrupt or truncated ({detail})') from err


def unwrap_state_dict(obj, checkpoint_key: Optional[str] = None) -> tuple:
    """Return ``(state_dict, key_used)`` from a release file's top-level object.

    ``checkpoint_key`` names the wrapper key; by default the first of :data:`WRAPPER_KEYS` found,
    or the object itself when it already is a flat ``name -> tensor`` mapping.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'checkpoint holds a {type(obj).__name__}, not a dict of tensors')
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


# Checkpoint layouts of other model families that users are pointed to by mistake: a key that only
# that layout has -> what the file is. RepMobile's README links RepViT's detection and segmentation
# files (repvit_m1_1_coco.pth, repvit_m1_5_coco.pth, repvit_m1_1_ade20k.pth) as its own.
FOREIGN_LAYOUTS = {
    'features.0.0.c.weight': "a RepViT model in RepViT's official layout (features.<i>.*.c / .bn keys), such as "
                             "the COCO / ADE20K files repvit_m1_1_coco.pth, repvit_m1_5_coco.pth and "
                             "repvit_m1_1_ade20k.pth that the RepMobile README links. It is not a RepMobile "
                             "model, and this package has no converter from RepViT's official layout to "
                             "timm's (the RepViT comparator configs use timm's RepViT)",
}


def foreign_layout(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """What a state dict is when it has the layout of another family (:data:`FOREIGN_LAYOUTS`)."""
    return next((what for key, what in FOREIGN_LAYOUTS.items() if key in state_dict), None)


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
            lines.append(f'ignored {len(self.ignored)} head keys: {abbreviate(self.ignored)}')
        for name in ('missing', 'unexpected', 'mismatched'):
            keys = getattr(self, name)
            if keys:
                lines.append(f'{name} {len(keys)} keys: {abbreviate(keys)}')
        return '; '.join(lines)


def abbreviate(keys: List[str], n: int = 6) -> str:
    """The first ``n`` keys and how many more there are."""
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
