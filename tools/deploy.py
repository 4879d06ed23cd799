"""Deploy a trained detector or segmentor: fuse, export, quantize when asked, verify, report.

    python tools/deploy.py CONFIG CHECKPOINT --work-dir DIR [--backend onnxruntime|openvino|auto]
        [--precision fp32|int8|auto] [--max-drop 0.01] [--calib-dir DIR] [--calib-n 16] [--eval-n N]
        [--time-n 4] [--rounds 3] [--threads 1] [--no-fuse] [--cfg-options k=v ...]

Writes DIR/<config>_<backend>_<precision>/ with the network (``model.onnx``; OpenVINO INT8: ``model.xml`` +
``model.bin``) and ``report.md`` / ``report.json``: the deployed network vs fused PyTorch (SQNR per output),
and for each form (training form in mmdet, fused PyTorch, deployed fp32, deployed INT8) the config's own test
metric and end-to-end latency (image file in, predictions out), all forms interleaved. The folder appears only
when every step passed. INT8: onnxruntime's QDQ quantizer (``--backend onnxruntime``) or NNCF on OpenVINO;
``--max-drop`` bounds the drop of the primary metric (bbox mAP, mask mAP, mIoU / 100), with NNCF's accuracy
control on OpenVINO. ``auto`` (backend and / or precision): every candidate (onnxruntime / OpenVINO fp32,
onnxruntime's QDQ graph on either runtime, NNCF) is deployed, scored and timed in one run, and the fastest whose
drop vs the fp32 graph on its runtime is within ``--max-drop`` (default 0.01) is kept; the card lists them all
and says why it chose. Calibration: ``--calib-dir`` images, else the config's training images. Relative data
paths of the config resolve from the current directory. Exit status 2 on a bad input, with the reason.
"""
import argparse
import sys
from typing import Optional, Sequence

from mmengine.config import DictAction

from rep_backbones.deploy.data import CalibrationDataError
from rep_backbones.deploy.pipeline import PRECISIONS, DeployOptions, deploy
from rep_backbones.deploy.quantize import AccuracyTargetError, UnfusedModelError, ZeroMetricError
from rep_backbones.deploy.report import markdown
from rep_backbones.deploy.runtimes import BACKENDS, BackendError
from rep_backbones.deploy.select import DEFAULT_MAX_DROP


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--backend', choices=BACKENDS + ('auto',), default='onnxruntime',
                        help='auto: try each runtime, keep the fastest within --max-drop')
    parser.add_argument('--precision', choices=PRECISIONS + ('auto',), default='fp32',
                        help='auto: try fp32 and INT8, keep the fastest within --max-drop')
    parser.add_argument('--max-drop', type=float, default=None,
                        help='INT8: largest allowed drop of the primary metric (absolute, e.g. 0.01 = 1 mAP point); '
                             f'auto: the selection\'s bound (default {DEFAULT_MAX_DROP}), also NNCF\'s when given')
    parser.add_argument('--calib-dir', help='calibration images (default: the config\'s training images)')
    parser.add_argument('--calib-n', type=int, default=16, help='calibration images used')
    parser.add_argument('--eval-n', type=int, default=None, help='test images scored (default: all)')
    parser.add_argument('--time-n', type=int, default=4, help='test images timed per round')
    parser.add_argument('--rounds', type=int, default=3, help='interleaved timing rounds')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--no-fuse', action='store_true', help='deploy the model as built (must already be fused)')
    parser.add_argument('--no-progress', action='store_true')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.max_drop is not None and args.precision == 'fp32':
        print('deploy: --max-drop bounds the INT8 drop; add --precision int8 or auto', file=sys.stderr)
        return 2
    auto = 'auto' in (args.backend, args.precision)
    if auto and args.max_drop is not None and args.max_drop < 0:
        print(f'deploy: --max-drop {args.max_drop} < 0 with auto: the fp32 graph on each runtime is the reference '
              '(drop 0), so a negative bound rejects every candidate; give a bound >= 0', file=sys.stderr)
        return 2
    options = DeployOptions(backend=args.backend, precision=args.precision, max_drop=args.max_drop,
                            calib_dir=args.calib_dir, calib_n=args.calib_n, eval_n=args.eval_n, time_n=args.time_n,
                            rounds=args.rounds, threads=args.threads, fuse=not args.no_fuse,
                            progress=not args.no_progress)
    try:
        card = deploy(args.config, args.checkpoint, args.work_dir, options, args.cfg_options)
    except AccuracyTargetError as err:
        print(f'deploy: accuracy target not met: {err} (best reachable drop: {err.best_drop:.4f}); '
              'nothing was written', file=sys.stderr)
        return 2
    except (UnfusedModelError, BackendError, CalibrationDataError, ZeroMetricError) as err:
        print(f'deploy: {type(err).__name__}: {err}; nothing was written', file=sys.stderr)
        return 2
    print(markdown(card))
    return 0


if __name__ == '__main__':
    sys.exit(main())
