"""Peak memory of a case, measured in a **fresh subprocess** (``python -m rep_backbones.benchmark
CASE_JSON``, :mod:`rep_backbones.benchmark.__main__`), so allocator caches of other cases do not hide it:

* CPU: peak resident set size during the timed calls minus the resident size just before them.
  The kernel's high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs`` first, so the
  memory used while building / fusing / exporting does not mask the inference peak. Where that
  file is not writable the ``resource.getrusage`` ``ru_maxrss`` delta is used (then 0 means "no
  higher than the build's peak"); the JSON says which (``memory_method``). The subprocess runs with
  glibc's ``MALLOC_MMAP_THRESHOLD_=65536`` / ``MALLOC_TRIM_THRESHOLD_=0``, so freed tensors leave the
  resident set (otherwise the warm-up call's freed memory is reused unseen). ``resident_mib`` is the
  whole process (Python, torch and its libraries included), ``peak_mib`` the part the calls add.
* CUDA: ``torch.cuda.max_memory_allocated`` during the calls minus ``memory_allocated`` before.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import asdict
from typing import Callable

import torch

from .cases import build_case
from .settings import Settings


def _proc_status_kb(field_name: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field_name + ':'):
                return int(line.split()[1])
    raise KeyError(field_name)


def peak_memory(fn: Callable[[], object], calls: int, device: str) -> dict:
    """Peak extra memory (MiB) while ``fn`` runs ``calls`` times, in this process (see module doc)."""
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        return dict(peak_mib=(torch.cuda.max_memory_allocated() - before) / 2 ** 20,
                    resident_mib=before / 2 ** 20, memory_method='torch.cuda.max_memory_allocated')
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')                      # reset VmHWM to the current RSS
        method = 'VmHWM after /proc/self/clear_refs reset'
    except OSError:
        method = 'getrusage ru_maxrss delta'
    before = _proc_status_kb('VmRSS') if method.startswith('VmHWM') else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss
    for _ in range(calls):
        fn()
    after = _proc_status_kb('VmHWM') if method.startswith('VmHWM') else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss
    return dict(peak_mib=max(after - before, 0) / 1024, resident_mib=_proc_status_kb('VmRSS') / 1024,
                memory_method=method)


def measure_memory_in_subprocess(case: dict, settings: Settings, calls: int = 2, timeout: float = 900) -> dict:
    """:func:`peak_memory` of ``case`` in a fresh Python process (after one warm-up call)."""
    payload = json.dumps(dict(case=case, settings=asdict(settings), calls=calls))
    # glibc: a fixed mmap threshold makes every block >= 64 KiB its own mapping, returned to the system
    # when freed, so the resident size follows the live tensors (with the default dynamic threshold a
    # freed warm-up step stays resident and the next step's peak would not show)
    env = dict(os.environ, OMP_NUM_THREADS=str(settings.threads), MALLOC_MMAP_THRESHOLD_='65536',
               MALLOC_TRIM_THRESHOLD_='0')
    proc = subprocess.run([sys.executable, '-m', 'rep_backbones.benchmark', payload], capture_output=True,
                          text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f'memory probe for {case} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def probe_main(payload: str) -> None:
    """The subprocess's side of :func:`measure_memory_in_subprocess`: build the case of ``payload``
    (``{case, settings, calls}`` as JSON), call it once, print its :func:`peak_memory` as one JSON line."""
    spec = json.loads(payload)
    settings = Settings(**spec['settings'])
    built = build_case(spec['case'], settings)
    if built.fn is None:
        result = dict(skipped=built.info.get('skipped'))
    else:
        built.fn()                              # warm-up: lazy initialisation is not the steady state
        result = peak_memory(built.fn, spec['calls'], settings.device)
    print(json.dumps(result))
