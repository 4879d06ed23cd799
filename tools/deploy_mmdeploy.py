#!/usr/bin/env python
"""Export a whole detector / segmentor with mmdeploy (post-processing included) and check it in onnxruntime.

    python tools/deploy_mmdeploy.py DEPLOY_CFG MODEL_CFG CHECKPOINT IMG [IMG ...] --work-dir DIR
        [--cfg-options KEY=VALUE ...] [--device cpu] [--no-check] [--top-k 50] [--as-mmdeploy]

DEPLOY_CFG is an mmdeploy deploy config (``configs/mmdeploy/*``); MODEL_CFG / CHECKPOINT are either the deploy
form and a fused checkpoint (``configs/deploy/*_deploy.py`` + ``tools/fuse_checkpoint.py`` output) or the
training config and checkpoint (mmdeploy then calls ``backbone.switch_to_deploy()`` after loading). The first
IMG traces the graph; ``DIR/end2end.onnx`` is written. Unless ``--no-check``, every IMG is then predicted by
the PyTorch model and by mmdeploy's onnxruntime ``End2EndModel`` and the differences are printed (see
``rep_backbones.deploy.mmdeploy_verify.compare_predictions``); ``--as-mmdeploy`` makes the PyTorch side of a
two-stage detector post-process as mmdeploy's graph does (``mmdet_postprocessing_as_mmdeploy``), so that
what remains is the graph's own error. The export runs through
``rep_backbones.deploy.mmdeploy_compat`` (mmdeploy 1.3.1 on torch 2.14) and uses the test dataloader's pipeline
(the one ``tools/test.py`` evaluates with). Details and known differences: docs/deploy.md.
"""
import argparse
import contextlib
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

import rep_backbones  # noqa: E402,F401  (registers the backbones)
from rep_backbones.deploy import mmdeploy_compat, mmdeploy_verify  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('deploy_cfg')
    parser.add_argument('model_cfg')
    parser.add_argument('checkpoint')
    parser.add_argument('images', nargs='+', metavar='IMG')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='overrides of MODEL_CFG')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--no-check', action='store_true', help='only export')
    parser.add_argument('--top-k', type=int, default=50, help='detections compared per image and side')
    parser.add_argument('--as-mmdeploy', action='store_true',
                        help="two-stage detectors: PyTorch post-processes as mmdeploy's graph does "
                             '(docs/deploy.md, Mask R-CNN)')
    args = parser.parse_args(argv)
    for path in [args.deploy_cfg, args.model_cfg, args.checkpoint, *args.images]:
        if not os.path.isfile(path):
            parser.error(f'file not found: {path}')

    model_cfg = mmdeploy_verify.load_model_config(args.model_cfg, args.cfg_options)
    onnx_file = mmdeploy_compat.torch2onnx(args.images[0], args.work_dir, 'end2end.onnx', args.deploy_cfg,
                                           model_cfg, args.checkpoint, args.device)
    print(f'wrote {onnx_file}')
    if args.no_check:
        return
    processor, pytorch_model, backend_model = mmdeploy_verify.build_models(
        args.deploy_cfg, model_cfg, args.checkpoint, [onnx_file], args.device)
    reference_context = (mmdeploy_verify.mmdet_postprocessing_as_mmdeploy if args.as_mmdeploy
                         else contextlib.nullcontext)
    for image in args.images:
        data, _ = processor.create_input(image)
        with torch.no_grad():
            with reference_context():
                ref = pytorch_model.test_step(copy.deepcopy(data))[0]
            got = backend_model.test_step(copy.deepcopy(data))[0]
        diff = mmdeploy_verify.compare_predictions(ref, got, top_k=args.top_k)
        print(f'{image}: ' + ', '.join(f'{k}={v:.6g}' for k, v in diff.items()))


if __name__ == '__main__':
    main()
