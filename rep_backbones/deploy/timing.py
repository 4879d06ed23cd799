"""The one interleaved timing loop: the benchmark, the analysis tools and the deploy report card time with it.

Callables are timed in turn, round after round (``rounds`` rounds of ``iters`` calls each), so that a
slow phase of the machine (another process, thermal or frequency changes) falls on every form alike
rather than on whichever ran last. Every callable is warmed up first (lazy allocation, onnxruntime's and
OpenVINO's first-run graph work, mmcv op loading).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Sequence, Tuple, TypeVar

import numpy as np
import torch

T = TypeVar('T')


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def timed_call(fn: Callable[[], T], device: str = 'cpu') -> Tuple[T, float]:
    """``(fn(), seconds it took)``, CUDA synchronised before and after."""
    _sync(device)
    t0 = time.perf_counter()
    result = fn()
    _sync(device)
    return result, time.perf_counter() - t0


def time_calls(fn: Callable[[], object], n: int, device: str = 'cpu') -> List[float]:
    """Seconds of each of ``n`` calls (CUDA synchronised before and after each)."""
    return [timed_call(fn, device)[1] for _ in range(n)]


def interleaved(fns: Dict[str, Callable[[], object]], rounds: int, iters: int, warmup: int = 1,
                device: str = 'cpu', progress: bool = False) -> Dict[str, List[float]]:
    """Warm every callable up (``warmup`` calls), then ``rounds`` rounds of ``iters`` calls of each in turn;
    returns name -> seconds of every timed call (``rounds * iters`` each). ``progress``: a tqdm bar over rounds."""
    from tqdm import tqdm
    for fn in fns.values():
        time_calls(fn, warmup, device)
    times: Dict[str, List[float]] = {key: [] for key in fns}
    for _ in tqdm(range(rounds), desc='timing', unit='round', disable=not progress, leave=False):
        for key, fn in fns.items():
            times[key] += time_calls(fn, iters, device)
    return times


def summarize(times: Sequence[float], batch: int = 1) -> dict:
    """Milliseconds: ``n``, ``median_ms``, ``p90_ms``, ``mean_ms``, ``min_ms``; ``throughput`` = items per
    second at the median."""
    ms = sorted(t * 1e3 for t in times)
    median = statistics.median(ms)
    return dict(n=len(ms), median_ms=median, p90_ms=float(np.percentile(ms, 90)), mean_ms=statistics.fmean(ms),
                min_ms=ms[0], throughput=batch / (median / 1e3))
