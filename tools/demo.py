"""The main job: train a RepGhostNet detector on the toy COCO set, then show what fusion buys.

    python tools/demo.py [--model retinanet|mask_rcnn] [--work-dir outputs/demo] [--iters N]
                         [--num-train 160] [--num-val 40] [--data-root data/toy_coco]

Steps (each prints its command, its progress and its time; full logs go to WORK_DIR/*.log):
  1. generate the toy COCO set (rep_backbones.toy_data, deterministic) under --data-root;
  2. train configs/toy/toy_<model>_repghost_1_0x.py with tools/train.py (from scratch, CPU,
     seeded and deterministic: the same machine prints the same numbers), validating 8 times on
     the way; the validation mAP per iteration is drawn into WORK_DIR/learning_curve.png;
  3. test the last checkpoint with tools/test.py in training form (--no-fuse) and fused
     (RepFuseHook, which checks the fused backbone against the training form on the first batch);
  4. write the fused checkpoint (tools/fuse_checkpoint.py) and test it with the deploy config
     (configs/toy/deploy/*: backbone built with deploy=True);
  5. export the fused model to ONNX (tools/export_onnx.py: RetinaNet's whole network in tensor mode,
     Mask R-CNN's backbone + neck) and check it against PyTorch;
  6. compare every form's raw network outputs (backbone + neck maps, and class scores and box deltas
     before post-processing; for the onnxruntime form the outputs of its graph) with the training
     form's on the first validation image, each tensor against its own scale, then time every form on
     the validation images in one loop
     (batch 1; the forms take turns on each image, so machine load hits them alike) and evaluate each
     one's predictions; the onnxruntime form runs the exported graph with PyTorch pre- and
     post-processing;
  7. draw ground truth and predictions side by side for a few validation images
     (WORK_DIR/predictions.png) and print the table of mAP and latency per form (also written to
     WORK_DIR/results.md and results.json).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {'retinanet': 'toy_retinanet_repghost_1_0x', 'mask_rcnn': 'toy_mask_rcnn_repghost_1_0x'}
FORMS = ('training form', 'fused (RepFuseHook)', 'fused checkpoint, deploy config', 'onnxruntime')
METRICS = [('coco/bbox_mAP', 'bbox mAP'), ('coco/bbox_mAP_50', 'bbox mAP@50'),
           ('coco/segm_mAP', 'mask mAP'), ('coco/segm_mAP_50', 'mask mAP@50')]
# what the console shows of a train/test run: mmengine's progress lines (with ETA and time per
# iteration), checkpoints, RepFuseHook's report, errors; everything else stays in the log file
PROGRESS = re.compile(r'(Iter|Epoch)\((train|val|test)\)|Saving checkpoint|RepFuseHook[ :(]+[a-z]|fused vs'
                      r'|Advance dataloader|Error|Traceback|FAILED')
# what the console shows of the other tools' output: all but Python's warnings
NO_WARNINGS = re.compile(r'^(?!.*(Warning|_bootstrap\._exec|import pkg_resources|warnings\.warn)).+')
MM_PREFIX = re.compile(r'^\d\d/\d\d \d\d:\d\d:\d\d - mmengine - (INFO|WARNING) - ')


def run(cmd: List[str], log: Path, show: Optional[re.Pattern] = PROGRESS) -> float:
    """Run ``cmd`` in the repository root; every output line goes to ``log``, the lines matching
    ``show`` (all when None) also to the console. Exits with the log's tail on failure."""
    start = time.time()
    print(f'$ {" ".join(str(c) for c in cmd)}', flush=True)
    tail: List[str] = []
    with open(log, 'w') as f, subprocess.Popen([str(c) for c in cmd], cwd=ROOT, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            f.write(line)
            tail = (tail + [line])[-30:]
            if show is None or show.search(line):
                print('  ' + MM_PREFIX.sub('', line.rstrip()), flush=True)
    if proc.returncode:
        sys.exit(''.join(tail) + f'\ncommand failed with status {proc.returncode}; full log: {log}')
    took = time.time() - start
    print(f'  done in {took:.0f} s (log: {log})', flush=True)
    return took


def cfg_options(data_root: Path) -> Dict[str, str]:
    """Point a toy config at the generated set (absolute paths: the tools run from any directory)."""
    ann = data_root / 'annotations' / 'instances_val2017.json'
    opts = {f'{split}_dataloader.dataset.data_root': f'{data_root}/' for split in ('train', 'val', 'test')}
    opts.update({f'{split}_evaluator.ann_file': str(ann) for split in ('val', 'test')})
    return opts


def schedule_options(iters: int) -> Dict[str, str]:
    """A shorter or longer run of the same schedule: 8 validations, checkpoints with them, progress
    lines every 10 iterations (or more often), 30 warm-up iterations, cosine decay to the end (the
    configs' param_scheduler: [warm-up, cosine])."""
    val = max(1, iters // 8)
    return {'train_cfg.max_iters': str(iters), 'train_cfg.val_interval': str(val),
            'default_hooks.logger.interval': str(min(10, val)),
            'default_hooks.checkpoint.interval': str(val), 'param_scheduler.0.end': str(min(30, iters)),
            'param_scheduler.1.end': str(iters)}


def as_cli(options: Dict[str, str]) -> List[str]:
    return ['--cfg-options', *(f'{k}={v}' for k, v in options.items())] if options else []


# -- learning curve --------------------------------------------------------------------------------
def validation_curve(work: Path, key: str = 'coco/bbox_mAP_50') -> List[tuple]:
    """``[(iteration, value)]`` of ``key`` from the newest training run's mmengine scalars file."""
    runs = sorted(work.glob('*/vis_data/scalars.json'), key=lambda p: p.stat().st_mtime)
    if not runs:
        return []
    points = []
    for line in runs[-1].read_text().splitlines():
        record = json.loads(line)
        if key in record:
            points.append((int(record['step']), float(record[key])))
    return points


def plot_curve(points: Dict[str, List[tuple]], out: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for label, pts in points.items():
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', label=label)
    ax.set_xlabel('training iteration')
    ax.set_ylabel('validation mAP')
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


# -- timing loop -----------------------------------------------------------------------------------
def _two_stage(model) -> bool:
    return hasattr(model, 'rpn_head') and hasattr(model, 'roi_head')


def raw_output_differences(models: Dict[str, object], onnx_path: Path, data, threads: int) -> Dict[str, float]:
    """Per form, the largest ``max |out - ref| / max |ref|`` over the network's raw tensors on the batch
    ``data``, each tensor against its own scale, ``ref`` being the training form's (the first of ``models``).

    The PyTorch forms are compared on the backbone + neck maps and on the raw head outputs: class scores and
    box deltas of every level, before any score threshold or NMS (tensor mode); for two-stage detectors the RPN
    maps and the RoI head's box and mask outputs on the training form's proposals (each form's own proposals
    would go through NMS, where a last-bit difference can swap near-tied boxes and compare different RoIs).
    The last form, onnxruntime, runs its graph: the whole tensor-mode network, or backbone + neck for two-stage
    detectors. Per tensor, because a briefly trained head's outputs sit near their initial biases: against the
    largest output of all, a changed feature map would hide below float rounding."""
    import numpy as np
    import torch

    from rep_backbones.deploy.runtimes import ort_session
    names = list(models)
    reference = models[names[0]]
    batch = reference.data_preprocessor(copy.deepcopy(data), False)
    inputs, samples = batch['inputs'], batch['data_samples']

    def flat(outputs):
        return [outputs] if isinstance(outputs, torch.Tensor) else [t for o in outputs for t in flat(o)]

    def raw(model):
        """(backbone + neck maps, raw head outputs)"""
        features = model.extract_feat(inputs)
        if not _two_stage(model):
            return flat(features), flat(model(inputs, samples, mode='tensor'))
        return flat(features), flat(model.rpn_head(features)) + flat(model.roi_head.forward(features, proposals,
                                                                                                samples))
    with torch.no_grad():
        if _two_stage(reference):
            proposals = reference.rpn_head.predict(reference.extract_feat(inputs), samples, rescale=False)
        features, tensors = raw(reference)
        ref = {'pytorch': features + tensors, 'graph': features if _two_stage(reference) else tensors}
        outs = {name: ('pytorch', sum(raw(models[name]), [])) for name in names[1:-1]}
    outs[names[-1]] = ('graph', [torch.from_numpy(o) for o in ort_session(onnx_path, threads).run(
        None, {'input': np.ascontiguousarray(inputs.numpy())})])
    diffs = {names[0]: 0.0}
    for name, (kind, out) in outs.items():
        if len(out) != len(ref[kind]) or any(a.shape != b.shape for a, b in zip(out, ref[kind])):
            diffs[name] = float('inf')
            continue
        # an all-zero reference tensor (a dead map) is compared absolutely
        diffs[name] = max(float((o - r).abs().max()) / (float(r.abs().max()) or 1.0) for o, r in zip(out, ref[kind]))
    return diffs


def time_forms(predictors: Dict[str, Callable], dataloader, test_evaluator, dataset_meta) -> Dict[str, dict]:
    """Run every predictor on every batch (batch 1), taking turns (``rep_backbones.deploy.timing``'s call
    timer); returns per form the metrics of its predictions, its median latency in ms per image and the
    predictions themselves."""
    import statistics

    import torch
    from mmengine.evaluator import Evaluator

    from rep_backbones.deploy.timing import timed_call
    with contextlib.redirect_stdout(io.StringIO()):          # pycocotools' progress prints
        evaluators = {name: Evaluator(test_evaluator) for name in predictors}
    times: Dict[str, List[float]] = {name: [] for name in predictors}
    outputs: Dict[str, list] = {name: [] for name in predictors}
    with torch.no_grad():
        for data in dataloader:
            for name, predict in predictors.items():
                own = copy.deepcopy(data)     # predictions are written into the data samples
                samples, seconds = timed_call(lambda: predict(own))
                times[name].append(seconds * 1000 / len(samples))
                evaluators[name].process(data_samples=samples, data_batch=own)
                outputs[name].extend(samples)
    results = {}
    for name, evaluator in evaluators.items():
        evaluator.dataset_meta = dataset_meta
        with contextlib.redirect_stdout(io.StringIO()):
            metrics = evaluator.evaluate(len(dataloader.dataset))
        results[name] = dict(metrics=metrics, latency_ms=statistics.median(times[name]), predictions=outputs[name])
    return results


def draw_pictures(samples, dataset_meta, out: Path, count: int = 6, columns: int = 2) -> None:
    """Ground truth (left) and predictions with score > 0.3 (right) for the first ``count`` images."""
    import mmcv
    import numpy as np
    import torch.nn.functional as F
    from mmdet.visualization import DetLocalVisualizer
    # mmengine warns about boxes that touch the image border; nothing to act on
    warnings.filterwarnings('ignore', category=UserWarning, module='mmengine.visualization')
    vis = DetLocalVisualizer(name=f'demo_{time.time_ns()}')
    vis.dataset_meta = dataset_meta
    tiles = []
    for sample in samples[:count]:
        image = mmcv.imconvert(mmcv.imread(sample.img_path), 'bgr', 'rgb')
        image = mmcv.imrescale(image, 2.0)  # larger labels stay readable on the small toy images
        sample = sample.clone()
        for inst in (sample.gt_instances, sample.pred_instances):
            inst.bboxes = inst.bboxes * 2
            if 'masks' in inst:    # ground truth: mmdet BitmapMasks; predictions: bool tensor N x H x W
                masks = inst.masks
                inst.masks = masks.rescale(2.0) if hasattr(masks, 'rescale') else \
                    F.interpolate(masks[None].float(), scale_factor=2.0, mode='nearest')[0].bool()
        vis.add_datasample('predictions', image, sample, draw_gt=True, draw_pred=True, pred_score_thr=0.3)
        tiles.append(vis.get_image())
    while len(tiles) % columns:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    mmcv.imwrite(mmcv.imconvert(np.concatenate(rows, axis=0), 'rgb', 'bgr'), str(out))


def table(rows: List[dict], labels: List[str]) -> str:
    head = '| model form | ' + ' | '.join(labels) + ' | latency ms/image | speed-up |'
    lines = [head, '|---|' + '---|' * (len(labels) + 2)]
    base = rows[0]['latency_ms']
    for row in rows:
        cells = [f'{row[label]:.3f}' for label in labels]
        lines.append(f'| {row["form"]} | ' + ' | '.join(cells) +
                     f' | {row["latency_ms"]:.1f} | {base / row["latency_ms"]:.2f}x |')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--model', choices=sorted(MODELS), default='retinanet')
    parser.add_argument('--work-dir', default='outputs/demo')
    parser.add_argument('--iters', type=int, help="training iterations (default: the config's schedule)")
    parser.add_argument('--num-train', type=int, default=160)
    parser.add_argument('--num-val', type=int, default=40)
    parser.add_argument('--data-root', default='data/toy_coco', help='where the toy set is generated')
    args = parser.parse_args(argv)
    if args.iters is not None and args.iters < 1:
        parser.error(f'--iters must be at least 1, got {args.iters}')
    if args.num_train < 1 or args.num_val < 1:
        parser.error('--num-train and --num-val must be at least 1')
    return args


def main(argv=None):
    args = parse_args(argv)
    total_start = time.time()
    work = (ROOT / args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    config = ROOT / 'configs' / 'toy' / f'{MODELS[args.model]}.py'
    deploy_config = ROOT / 'configs' / 'toy' / 'deploy' / f'{MODELS[args.model]}_deploy.py'
    py = sys.executable

    from rep_backbones.toy_data import make_toy_coco
    start = time.time()
    paths = make_toy_coco(ROOT / args.data_root, num_train=args.num_train, num_val=args.num_val)
    print(f'[1/7] toy COCO: {args.num_train} train / {args.num_val} val images in {paths["root"]} '
          f'({time.time() - start:.0f} s)', flush=True)
    data_opts = cfg_options(Path(paths['root']))
    train_opts = dict(data_opts, **(schedule_options(args.iters) if args.iters else {}))
    # test progress about every quarter of the validation set (at most every 10 images)
    test_opts = dict(data_opts, **{'default_hooks.logger.interval': str(min(10, max(1, args.num_val // 4)))})

    print(f'[2/7] training {config.relative_to(ROOT)} (progress lines with ETA)', flush=True)
    for stale in work.glob('iter_*.pth'):     # a previous demo's checkpoints would hide this run's
        stale.unlink()
    train_time = run([py, 'tools/train.py', config, '--work-dir', work, *as_cli(train_opts)], work / 'train.log')
    checkpoint = Path((work / 'last_checkpoint').read_text().strip())
    curves = {label: validation_curve(work, key) for key, label in METRICS}
    curves = {label: pts for label, pts in curves.items() if pts}
    if curves:
        plot_curve(curves, work / 'learning_curve.png', f'{config.name} on toy COCO, {train_time / 60:.1f} min on CPU')

    print('[3/7] testing the checkpoint: training form, then fused by RepFuseHook', flush=True)
    tool_metrics = {}
    for form, extra, tag in [(FORMS[0], ['--no-fuse'], 'train_form'), (FORMS[1], [], 'fused')]:
        out = work / f'metrics_{tag}.json'
        run([py, 'tools/test.py', config, checkpoint, '--work-dir', work, '--out-json', out, *extra,
             *as_cli(test_opts)], work / f'test_{tag}.log')
        tool_metrics[form] = json.loads(out.read_text())

    print('[4/7] fused checkpoint, tested with the deploy config', flush=True)
    fused = work / 'fused.pth'
    run([py, 'tools/fuse_checkpoint.py', config, checkpoint, fused], work / 'fuse.log', show=NO_WARNINGS)
    out = work / 'metrics_deploy.json'
    run([py, 'tools/test.py', deploy_config, fused, '--work-dir', work, '--out-json', out, *as_cli(test_opts)],
        work / 'test_deploy.log')
    tool_metrics[FORMS[2]] = json.loads(out.read_text())

    # in-process from here: the deploy model, the validation data and the evaluator of the config
    import torch
    from mmdet.utils import register_all_modules
    from mmengine.logging import MMLogger
    from mmengine.runner import Runner

    import rep_backbones
    from rep_backbones.deploy.forms import backend_predictor
    from rep_backbones.deploy.runtimes import Session
    from rep_backbones.io.build import build_model_from_config, load_config
    register_all_modules()
    logger = MMLogger.get_instance(f'demo_{time.time_ns()}', log_file=str(work / 'timing.log'))
    for handler in logger.handlers:       # evaluator tables go to the file, not the console
        if type(handler) is logging.StreamHandler:
            handler.setLevel(logging.WARNING)
    cfg = load_config(str(config), data_opts)
    dataloader = Runner.build_dataloader(cfg.test_dataloader, seed=0)
    models = {FORMS[0]: build_model_from_config(str(config), str(checkpoint), cfg_options=data_opts),
              FORMS[2]: build_model_from_config(str(deploy_config), str(fused), cfg_options=data_opts)}
    # what RepFuseHook does: fuse, then eval() (rep_backbones.fuse leaves the new modules in train mode)
    models[FORMS[1]] = rep_backbones.fuse(build_model_from_config(str(config), str(checkpoint),
                                                                  cfg_options=data_opts)).eval()
    shape = tuple(models[FORMS[2]].data_preprocessor(next(iter(dataloader)), False)['inputs'].shape)

    part = ['--features-only'] if args.model == 'mask_rcnn' else []
    print(f'[5/7] ONNX export of the fused model ({"backbone + neck" if part else "whole network, tensor mode"})',
          flush=True)
    onnx_path = work / 'fused.onnx'
    run([py, 'tools/export_onnx.py', deploy_config, fused, '--out', onnx_path, '--shape', *map(str, shape[2:]),
         *part], work / 'export_onnx.log', show=NO_WARNINGS)

    threads = torch.get_num_threads()
    raw = raw_output_differences({form: models.get(form) for form in FORMS}, onnx_path, next(iter(dataloader)),
                                 threads)
    print('[6/7] raw outputs on the first validation image, max |diff| / max |training form| per tensor: ' +
          ', '.join(f'{form} {raw[form]:.1e}' for form in FORMS[1:]), flush=True)
    print(f'      timing the four forms on {len(dataloader.dataset)} validation images (batch 1, {threads} '
          f'threads, forms interleaved)', flush=True)
    start = time.time()
    predictors = {name: models[name].test_step for name in FORMS[:3]}
    # the graph in onnxruntime inside the model's own pre- and post-processing, as tools/deploy.py runs it
    predictors[FORMS[3]] = backend_predictor(models[FORMS[2]], Session('onnxruntime', onnx_path, threads))
    timed = time_forms(predictors, dataloader, cfg.test_evaluator, dataloader.dataset.metainfo)
    print(f'  done in {time.time() - start:.0f} s (log: {work / "timing.log"})', flush=True)

    # CocoMetric returns nothing for a model without detections (a barely trained one): AP 0
    kinds = cfg.test_evaluator.metric
    keys = [(k, label) for k, label in METRICS if k.split('/')[1].split('_')[0] in kinds]
    for metrics in [*tool_metrics.values(), *(t['metrics'] for t in timed.values())]:
        for key, _ in keys:
            metrics.setdefault(key, 0.0)
    rows = []
    for form in FORMS:
        metrics = timed[form]['metrics']
        for key, _ in keys:    # the timing loop must reproduce what the tools printed
            if form in tool_metrics and abs(metrics[key] - tool_metrics[form][key]) > 1e-3:
                sys.exit(f'{form}: {key} {metrics[key]:.4f} in the timing loop but {tool_metrics[form][key]:.4f} '
                         'from tools/test.py')
        rows.append(dict(form=form, latency_ms=timed[form]['latency_ms'], raw_max_rel_diff=raw[form],
                         **{label: metrics[key] for key, label in keys}))

    print('[7/7] predictions picture', flush=True)
    picture = work / 'predictions.png'
    draw_pictures(timed[FORMS[2]]['predictions'], dataloader.dataset.metainfo, picture)

    labels = [label for _, label in keys]
    text = table(rows, labels)
    notes = (f'{args.model}, {config.relative_to(ROOT)}: trained {train_time / 60:.1f} min from scratch on '
             f'{args.num_train} toy images ({os.cpu_count()} CPU cores), tested on {args.num_val}. mAP: COCO metric on '
             'the validation set (rows 1-3 equal tools/test.py\'s). Latency: median over the validation images of '
             f'one image through pre-processing, network and post-processing (NMS), threads: {threads}; onnxruntime '
             f'runs the {"backbone + neck" if part else "whole network"} graph, pre-/post-processing in PyTorch.')
    (work / 'results.md').write_text(text + '\n\n' + notes + '\n')
    (work / 'results.json').write_text(json.dumps(dict(
        model=args.model, config=str(config.relative_to(ROOT)), checkpoint=str(checkpoint), fused_checkpoint=str(fused),
        onnx=str(onnx_path), train_time_s=round(train_time, 1), threads=threads, rows=rows,
        learning_curve={label: pts for label, pts in curves.items()}, picture=str(picture)), indent=2))
    print('\n' + text + '\n\n' + notes)
    print(f'\npredictions (left: ground truth, right: predictions with score > 0.3): {picture}')
    if curves:
        print(f'learning curve: {work / "learning_curve.png"}')
    print(f'table: {work / "results.md"}, {work / "results.json"}\ntotal time: {time.time() - total_start:.0f} s')


if __name__ == '__main__':
    main()
