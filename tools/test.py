"""Test a checkpoint with an mmdet / mmseg config; the backbone is fused before testing.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--no-fuse] [--out-json FILE]
        [--out FILE.pkl] [--show-dir DIR] [--trust-checkpoint] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS

The checkpoint is loaded strictly (every key of the model, nothing else); files written by mmdet 2.x /
mmseg 0.x (the papers' released detectors and segmentors) load as they are: a backbone converts its
official key layout where it differs, and the neck and head keys are unchanged (docs/weights.md, "Trained detectors and
segmentors"). RepFuseHook (in every config of this package; added here when missing) fuses a copy of
the model after the checkpoint (and EMA weights) are loaded, and checks it against the training form
on the first batch. ``--no-fuse`` tests the training form instead. Checkpoints are read safely (see
rep_backbones/checkpoint.py); ``--trust-checkpoint`` allows full unpickling of a file you trust.

Outputs, as mmdet's / mmseg's own tools/test.py make them:

* ``--out FILE.pkl`` (alias ``--dump``): the raw predictions — mmdet's ``DumpDetResults`` for
  detection configs (ground truth dropped, masks as COCO RLE), mmengine's ``DumpResults`` for
  segmentation configs.
* ``--show-dir DIR``: prediction pictures drawn by the config's visualization hook
  (``DetVisualizationHook`` / ``SegVisualizationHook``). DIR is taken as given (relative to the
  current directory), for both codebases; mmdet's test.py would put a relative DIR under
  ``work_dir/<timestamp>/``. mmdet draws every test image into DIR; mmseg draws every
  ``default_hooks.visualization.interval``-th batch (50 by default) into ``DIR/vis_data/vis_image``
  (and, unlike mmseg's test.py, does not need the training set on disk: see
  ``rep_backbones.mm.runner_utils.draw_test_predictions``).
* ``--out-json FILE``: the metrics as JSON, written atomically.
"""
import argparse
import functools
import os

from mmengine.runner import Runner

import rep_backbones  # noqa: F401  (registers backbones and hooks)
from rep_backbones.checkpoint import TRUST_ENV
from rep_backbones.fusion import fold_conv_bn_outside
from rep_backbones.io.atomic import write_json
from rep_backbones.mm.cuda_ops import check_mmcv_cuda_ops
from rep_backbones.mm.runner_utils import (
    DictAction,
    adapt_to_cpu,
    add_prediction_dump,
    draw_test_predictions,
    ensure_hook,
    load_config,
    remove_hook,
)


def parse_args():
    parser = argparse.ArgumentParser(description='Test a detector / segmentor')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--work-dir')
    parser.add_argument('--no-fuse', action='store_true', help='test the training form (no RepFuseHook)')
    parser.add_argument('--out-json', help='write the metrics to this JSON file')
    parser.add_argument('--out', '--dump', dest='out', metavar='FILE.pkl',
                        help='dump the raw predictions to this .pkl file (mmdet: DumpDetResults, masks as RLE; '
                             'mmseg: DumpResults)')
    parser.add_argument('--show-dir', help='draw the predictions into this directory')
    parser.add_argument('--whole-fused', action='store_true',
                        help='CHECKPOINT was written by tools/fuse_checkpoint.py --whole: fold the necks\' and heads\' '
                             'conv+BN pairs of the (deploy) CONFIG\'s model before loading it')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help=f'allow full unpickling of the checkpoint (same as {TRUST_ENV}=1)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out {args.out}: the predictions file must end with .pkl or .pickle')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if args.trust_checkpoint:
        os.environ[TRUST_ENV] = '1'
    return args


def main():
    args = parse_args()
    check_mmcv_cuda_ops()
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    cfg.launcher = args.launcher
    cfg.load_from = args.checkpoint
    adapt_to_cpu(cfg, args.launcher)
    if args.no_fuse:
        remove_hook(cfg, 'RepFuseHook')
    else:
        ensure_hook(cfg, 'RepFuseHook')
    if args.show_dir:
        draw_test_predictions(cfg, args.show_dir)
    runner = Runner.from_cfg(cfg)
    # mmengine loads ``load_from`` non-strictly (a missing key is only a warning): a test must evaluate
    # every weight of the checkpoint, so any missing or unexpected key stops it, named.
    runner.load_checkpoint = functools.partial(runner.load_checkpoint, strict=True)
    if args.whole_fused:   # structure only: the values come from the checkpoint, loaded by runner.test()
        fold_conv_bn_outside(runner.model)
    if args.out:
        add_prediction_dump(runner, args.out)
    metrics = runner.test()
    if args.out_json and runner.rank == 0:
        write_json({k: float(v) for k, v in metrics.items()}, args.out_json)
    return metrics


if __name__ == '__main__':
    main()
