"""Train a detector or segmentor from an mmdet / mmseg config (mmengine Runner).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG NUM_PROCS        # distributed (torchrun)

Works for both codebases (the config's ``default_scope`` picks mmdet or mmseg). On machines without
CUDA the same config runs on CPU (SyncBN -> BN, gloo, see rep_backbones/mm/runner_utils.py).
"""
import argparse
import os

from mmengine.runner import Runner

import rep_backbones  # noqa: F401  (registers backbones and hooks)
from rep_backbones.mm.cuda_ops import check_mmcv_cuda_ops
from rep_backbones.mm.runner_utils import DictAction, adapt_to_cpu, ensure_hook, load_config


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector / segmentor')
    parser.add_argument('config')
    parser.add_argument('--work-dir')
    parser.add_argument('--resume', nargs='?', const='auto',
                        help='resume from CKPT, or from the latest checkpoint in work_dir if no path')
    parser.add_argument('--amp', action='store_true', help='mixed precision (GPU)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main():
    args = parse_args()
    check_mmcv_cuda_ops()
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    cfg.launcher = args.launcher
    adapt_to_cpu(cfg, args.launcher)
    ensure_hook(cfg, 'SafeCheckpointHook')
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
