"""Atomic file (and folder) writes: a reader (or a crash) sees the old file or the complete new one, never half.

The tools write results that later steps trust — fused checkpoints, ONNX files, metrics JSON. Each
goes to a temporary file in the destination's directory (same file system, so the final rename is
atomic), is flushed to disk with ``fsync``, and only then renamed onto the destination with
``os.replace``. If the writer raises, the temporary file is removed and the destination is untouched.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import Any, Iterator, Union

PathLike = Union[str, 'os.PathLike[str]']


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[str]:
    """Yield a temporary file name next to ``path`` for the caller's writer (``torch.save``,
    ``torch.onnx.export``, ``open``); on normal exit the file is fsynced and renamed onto ``path``.

    The temporary name is ``.<name>.<random>.tmp`` in the same directory (created if missing); the
    writer creates the file itself, so it gets the usual permissions. A writer that raises — or
    creates no file — leaves ``path`` as it was and no temporary file behind.
    """
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f'{path} is a directory, expected a file path')
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f'.{name}.{secrets.token_hex(6)}.tmp')
    try:
        yield tmp
        if not os.path.isfile(tmp):
            raise FileNotFoundError(f'the writer for {path} created no file (expected {tmp})')
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync(directory)   # make the rename itself durable


def write_json(data: Any, path: PathLike, indent: int = 2) -> None:
    """``json.dump(data)`` into ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=indent)


@contextlib.contextmanager
def atomic_directory(path: PathLike) -> Iterator[str]:
    """Yield a temporary folder next to ``path`` to fill; on normal exit it replaces ``path`` (a folder, or
    nothing) by renames. A writer that raises leaves ``path`` as it was and no temporary folder behind."""
    import shutil
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f'.{name}.{secrets.token_hex(6)}.tmp')
    os.mkdir(tmp)
    try:
        yield tmp
        old = None
        if os.path.exists(path):
            old = os.path.join(parent, f'.{name}.{secrets.token_hex(6)}.old')
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)
    _fsync(parent)
