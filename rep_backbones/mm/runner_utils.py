"""What ``tools/train.py`` and ``tools/test.py`` share: config loading, hooks, the test outputs
(:func:`draw_test_predictions`, :func:`add_prediction_dump`) and the CPU adaptations.

mmengine 0.10.7 assumes GPUs for distributed runs. On a machine without CUDA, :func:`adapt_to_cpu`
makes the same config run on CPU, visibly (each change is logged):

* SyncBN -> BN everywhere in the config (``SyncBatchNorm`` refuses CPU tensors under DDP);
* a gloo process group is created before the Runner (mmengine's ``init_dist`` calls
  ``torch.cuda.set_device``; with a group already there it skips its own set-up); under
  ``--launcher slurm`` its rank, size and address come from Slurm's variables, as mmengine takes them;
* DDP is built with ``device_ids=None`` (mmengine passes ``[LOCAL_RANK]``, which CPU modules reject).
"""
from __future__ import annotations

import argparse
import os
import subprocess
from typing import Any, List, Optional

import torch
from mmengine.config import Config, DictAction  # noqa: F401  (DictAction re-exported for the tools)
from mmengine.logging import print_log

from ..io import build


def load_config(path: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None) -> Config:
    """:func:`rep_backbones.io.build.load_config` plus the Runner's ``work_dir`` default."""
    cfg = build.load_config(path, cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = os.path.join('work_dirs', os.path.splitext(os.path.basename(path))[0])
    return cfg


def _replace_syncbn(node: Any, changed: List[str], path: str = 'cfg') -> Any:
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN', 'TorchSyncBN'):
            node['type'] = 'BN'
            changed.append(path)
        for key, value in node.items():
            _replace_syncbn(value, changed, f'{path}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _replace_syncbn(value, changed, f'{path}[{i}]')
    return node


def _slurm_rendezvous() -> None:
    """The ``env://`` variables that mmengine's slurm set-up derives from Slurm's: rank ``SLURM_PROCID``,
    world size ``SLURM_NTASKS``, local rank ``SLURM_LOCALID``, the first host of ``SLURM_NODELIST``
    (``scontrol show hostname``) unless ``MASTER_ADDR`` is set, ``MASTER_PORT`` default 29500."""
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ['SLURM_NODELIST']
        os.environ['MASTER_ADDR'] = subprocess.getoutput(f'scontrol show hostname {nodes} | head -n1')
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def adapt_to_cpu(cfg: Config, launcher: str) -> None:
    """Make a GPU config train/test on CPU (no-op when CUDA is available)."""
    if torch.cuda.is_available():
        return
    changed: List[str] = []
    _replace_syncbn(cfg._cfg_dict, changed)
    if cfg.get('sync_bn'):
        cfg.sync_bn = None
        changed.append('cfg.sync_bn')
    if changed:
        print_log(f'[rep_backbones] no CUDA: SyncBN -> BN in {", ".join(changed)}', logger='current')
    if launcher != 'none':
        if not torch.distributed.is_initialized():
            if launcher == 'slurm':
                _slurm_rendezvous()
            torch.distributed.init_process_group(backend='gloo')
        cfg.env_cfg = dict(cfg.get('env_cfg', {}), dist_cfg=dict(backend='gloo'))
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
                                     find_unused_parameters=cfg.get('find_unused_parameters', False))
        print_log('[rep_backbones] no CUDA: gloo process group, DDP with device_ids=None', logger='current')


def ensure_hook(cfg: Config, hook_type: str, **kwargs) -> None:
    """Append ``dict(type=hook_type, **kwargs)`` to ``custom_hooks`` unless one is there."""
    hooks = list(cfg.get('custom_hooks', []) or [])
    if not any(h.get('type') in (hook_type, f'rep_backbones.{hook_type}') for h in hooks):
        hooks.append(dict(type=hook_type, **kwargs))
    cfg.custom_hooks = hooks


def remove_hook(cfg: Config, hook_type: str) -> None:
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', []) or []
                        if h.get('type') not in (hook_type, f'rep_backbones.{hook_type}')]


def draw_test_predictions(cfg: Config, show_dir: str) -> None:
    """Make the config's visualization hook draw the test predictions into ``show_dir`` (taken
    relative to the current directory), as mmdet's / mmseg's ``tools/test.py --show-dir`` do.

    mmdet: ``mmdet.engine.hooks.utils.trigger_visualization_hook`` (``draw=True``,
    ``test_out_dir``; an absolute directory stays as given instead of going under
    ``work_dir/<timestamp>``). mmseg has no importable helper; its test script sets ``draw=True`` and
    the visualizer's ``save_dir``, which is what is done here (pictures go to
    ``show_dir/vis_data/vis_image``, one per ``default_hooks.visualization.interval`` batches).
    """
    show_dir = os.path.abspath(show_dir)
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        from mmdet.engine.hooks.utils import trigger_visualization_hook
        trigger_visualization_hook(cfg, argparse.Namespace(show=False, show_dir=show_dir, wait_time=0))
    elif scope == 'mmseg':
        if 'visualization' not in cfg.get('default_hooks', {}):
            raise RuntimeError('--show-dir needs default_hooks.visualization (mmseg: SegVisualizationHook)')
        cfg.default_hooks.visualization.draw = True
        cfg.visualizer.save_dir = show_dir
        # SegVisualizationHook asks runner.iter for the picture's step, which builds the training
        # loop and its dataloader: the test would need the training set on disk. A test run does not
        # train, so the training part goes (runner.iter is then 0; picture names stay unique).
        cfg.train_dataloader = cfg.train_cfg = cfg.optim_wrapper = cfg.param_scheduler = None
    else:
        raise ValueError(f'--show-dir needs an mmdet or mmseg config (default_scope), got {scope!r}')


def add_prediction_dump(runner, path: str) -> None:
    """Append the dump metric of mmdet's / mmseg's ``tools/test.py --out``: mmdet's
    ``DumpDetResults`` (ground truth dropped, masks as RLE) for mmdet configs, mmengine's
    ``DumpResults`` otherwise; the ``.pkl`` is written by rank 0 when the test ends, atomically
    (a run killed while writing leaves the previous file, never half of one)."""
    if runner.cfg.get('default_scope') == 'mmdet':
        from mmdet.evaluation import DumpDetResults as Dump
    else:
        from mmengine.evaluator import DumpResults as Dump
    runner.test_evaluator.metrics.append(atomic_dump_metric(Dump)(out_file_path=path))


def atomic_dump_metric(dump_class):
    """``dump_class`` (a ``DumpResults``) with ``compute_metrics`` writing through :func:`atomic_write`."""
    from mmengine.fileio import dump
    from mmengine.logging import print_log

    from rep_backbones.io.atomic import atomic_write

    class AtomicDump(dump_class):
        def compute_metrics(self, results: list) -> dict:
            with atomic_write(self.out_file_path) as tmp:
                dump(results, tmp, file_format='pkl')
            print_log(f'Results has been saved to {self.out_file_path}.', logger='current')
            return {}
    AtomicDump.__name__ = AtomicDump.__qualname__ = f'Atomic{dump_class.__name__}'
    return AtomicDump
