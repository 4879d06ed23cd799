"""Test a checkpoint with an mmdet / mmseg config; the backbone is fused before testing.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--no-fuse] [--out-json FILE]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS

RepFuseHook (in every config of this package; added here when missing) fuses a copy of the model
after the checkpoint (and EMA weights) are loaded, and checks it against the training form on the
first batch. ``--no-fuse`` tests the training form instead. Checkpoints are read safely (see
rep_backbones/checkpoint.py); ``--trust-checkpoint`` allows full unpickling of a file you trust.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import rep_backbones  # noqa: E402,F401
from mmengine.evaluator import DumpResults  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from rep_backbones.checkpoint import TRUST_ENV  # noqa: E402
from rep_backbones.mm.runner_utils import DictAction, adapt_to_cpu, ensure_hook, load_config, remove_hook  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description='Test a detector / segmentor')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--work-dir')
    parser.add_argument('--no-fuse', action='store_true', help='test the training form (no RepFuseHook)')
    parser.add_argument('--out-json', help='write the metrics to this JSON file')
    parser.add_argument('--dump', help='also dump the raw predictions to this .pkl file (mmengine DumpResults)')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help=f'allow full unpickling of the checkpoint (same as {TRUST_ENV}=1)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if args.trust_checkpoint:
        os.environ[TRUST_ENV] = '1'
    return args


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    cfg.launcher = args.launcher
    cfg.load_from = args.checkpoint
    adapt_to_cpu(cfg, args.launcher)
    if args.no_fuse:
        remove_hook(cfg, 'RepFuseHook')
    else:
        ensure_hook(cfg, 'RepFuseHook')
    runner = Runner.from_cfg(cfg)
    if args.dump:
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.dump))
    metrics = runner.test()
    if args.out_json and runner.rank == 0:
        with open(args.out_json, 'w') as f:
            json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2)
    return metrics


if __name__ == '__main__':
    main()
