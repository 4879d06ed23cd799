#!/usr/bin/env python
"""Mask R-CNN deployed: which stages run in the backend, and what each choice buys end to end.

``tools/deploy.py`` runs a two-stage detector's backbone and neck in the backend and its RoI stage (RPN, RoI
align, box and mask heads, NMS, mask pasting) in PyTorch. On a CPU the RoI stage dominates, so this study also
runs mmdeploy's end2end graph (``configs/mmdeploy/instance-seg_onnxruntime_dynamic.py``: the whole model, NMS
and RoI align included) on onnxruntime and on OpenVINO, in fp32 and in INT8 (onnxruntime's QDQ quantizer over the
whole graph; OpenVINO runs the same QDQ graph). Every form is scored with the config's own evaluator (bbox and
mask mAP) and timed end to end (image file in, detections and masks out), all forms interleaved:

    python tools/analysis/mask_rcnn_end2end.py CONFIG CHECKPOINT --work-dir DIR [--threads 1] [--rounds 3]
        [--time-n 4] [--calib-n 16] [--eval-n N] [--cfg-options KEY=VALUE ...]

Prints one Markdown table (bbox / mask mAP and mAP@75, median / p90 ms, speed-up over the training form) and
writes DIR/mask_rcnn_end2end.json.
"""
import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

import rep_backbones  # noqa: E402
from rep_backbones.deploy import data, forms, mmdeploy_compat, mmdeploy_verify, quantize  # noqa: E402
from rep_backbones.deploy.export import export_onnx  # noqa: E402
from rep_backbones.deploy.report import environment  # noqa: E402
from rep_backbones.deploy.runtimes import Session  # noqa: E402
from rep_backbones.io.atomic import write_json  # noqa: E402
from rep_backbones.io.build import TensorModeWrapper, build_model_from_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
END2END_CFG = os.path.join(ROOT, 'configs', 'mmdeploy', 'instance-seg_onnxruntime_dynamic.py')
# INT8 where the weights are; box decoding, NMS, RoI align and mask pasting stay float
WEIGHT_OPS = ('Conv', 'Gemm', 'MatMul')
METRICS = ('bbox_mAP', 'bbox_mAP_75', 'segm_mAP', 'segm_mAP_75')


class SessionWrapper(torch.nn.Module):
    """mmdeploy's backend-wrapper interface (a module: ``wrapper({name: tensor}) -> {output: tensor}``,
    ``output_to_list``) over a :class:`~rep_backbones.deploy.runtimes.Session`: mmdeploy's ``End2EndModel`` then
    post-processes (rescaling, mask pasting) whatever runtime ran the graph, with the threads the study sets."""

    def __init__(self, session: Session):
        super().__init__()
        self.session = session

    def forward(self, inputs: dict) -> dict:
        (x,) = inputs.values()
        outs = self.session.run(x.float().contiguous().numpy())
        return {name: torch.from_numpy(o) for name, o in zip(self.session.output_names, outs)}

    def output_to_list(self, outputs: dict) -> list:
        return [outputs[name] for name in self.session.output_names]


def end2end_predictors(args, model, calibration, work_dir: str) -> dict:
    """mmdeploy's end2end graph of the training config and checkpoint (mmdeploy fuses the backbone itself:
    ``switch_to_deploy`` after loading), fp32 and QDQ INT8, each on onnxruntime and OpenVINO."""
    model_cfg = mmdeploy_verify.load_model_config(args.config, args.cfg_options)
    image = str(data.dataset_image_files(model, 'test')[0])
    fp32 = mmdeploy_compat.torch2onnx(image, work_dir, 'end2end.onnx', END2END_CFG, model_cfg, args.checkpoint)
    int8 = os.path.join(work_dir, 'end2end.int8.onnx')
    quantize.quantize_onnx(fp32, int8, calibration, op_types=WEIGHT_OPS)
    predictors = {}
    for graph, path in (('fp32', fp32), ('INT8 (QDQ)', int8)):
        for backend in ('onnxruntime', 'openvino'):
            _, _, e2e = mmdeploy_verify.build_models(END2END_CFG, model_cfg, args.checkpoint, [fp32])
            e2e.wrapper = SessionWrapper(Session(backend, path, args.threads))
            predictors[f'whole model, {backend} {graph}'] = forms.pytorch_predictor(e2e)
    return predictors


def backbone_neck_predictors(args, fused, calibration, work_dir: str) -> dict:
    """``tools/deploy.py``'s forms: backbone and neck in onnxruntime (fp32, QDQ INT8), the rest in PyTorch."""
    fp32 = os.path.join(work_dir, 'features.onnx')
    example = torch.from_numpy(calibration[0])
    export_onnx(TensorModeWrapper(fused, forms.export_part(fused)).eval(), example, fp32)
    int8 = os.path.join(work_dir, 'features.int8.onnx')
    quantize.quantize_onnx(fp32, int8, calibration)
    return {f'backbone + neck, onnxruntime {name}':
            forms.backend_predictor(fused, Session('onnxruntime', path, args.threads))
            for name, path in (('fp32', fp32), ('INT8 (QDQ)', int8))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--time-n', type=int, default=4)
    parser.add_argument('--calib-n', type=int, default=16)
    parser.add_argument('--eval-n', type=int, help='test images scored (default: all)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.work_dir, exist_ok=True)

    trained = build_model_from_config(args.config, args.checkpoint, cfg_options=args.cfg_options).eval()
    if forms.kind(trained) != 'two_stage':
        parser.error(f'{args.config} is not a two-stage detector')
    fused = rep_backbones.fuse(copy.deepcopy(trained), whole=True)
    calibration = data.calibration_inputs(fused, data.dataset_image_files(fused, 'train')[:args.calib_n])
    predictors = {'training form (mmdet)': forms.pytorch_predictor(trained),
                  'fused PyTorch': forms.pytorch_predictor(fused),
                  **backbone_neck_predictors(args, fused, calibration, args.work_dir),
                  **end2end_predictors(args, trained, calibration, args.work_dir)}
    dataset, batches = data.evaluation_set(fused, args.eval_n)
    metrics = forms.evaluate(fused, predictors, dataset, batches, progress=True)
    files = [b['data_samples'][0].img_path for b in batches[:args.time_n]]
    timing = forms.latency(predictors, data.deploy_pipeline(fused), files, args.rounds, progress=True)

    base = timing['training form (mmdet)']['median_ms']
    rows = []
    print('| form | ' + ' | '.join(METRICS) + ' | median ms | p90 ms | speed-up |')
    print('|---' * (len(METRICS) + 4) + '|')
    for name in predictors:
        # CocoMetric returns nothing when a form detects nothing: AP 0
        values = {m: next((v for k, v in metrics[name].items() if k.endswith('/' + m)), 0.0) for m in METRICS}
        t = timing[name]
        rows.append(dict(form=name, metrics=values, latency=t, speedup=base / t['median_ms']))
        print(f'| {name} | ' + ' | '.join(f'{values[m]:.3f}' for m in METRICS)
              + f" | {t['median_ms']:.1f} | {t['p90_ms']:.1f} | {base / t['median_ms']:.2f}x |")
    write_json(dict(config=args.config, checkpoint=args.checkpoint, test_images=len(batches),
                    timing=dict(rounds=args.rounds, images=len(files)), rows=rows,
                    environment=environment(args.threads)),
               os.path.join(args.work_dir, 'mask_rcnn_end2end.json'))


if __name__ == '__main__':
    main()
