"""The main job: train a RepGhostNet detector on the toy COCO set, test it in training form and
fused, save the fused checkpoint and draw its predictions.

    python tools/demo.py [--work-dir outputs/demo] [--epochs 12] [--config CONFIG]

Steps (each prints what it did):
  1. generate the toy COCO set (rep_backbones.toy_data, deterministic) under data/toy_coco;
  2. train configs/toy/toy_retinanet_repghost_1_0x.py on CPU (tools/train.py; 10 epochs of 40
     iterations at 192x160). RetinaNet rather than Mask R-CNN: on 2 CPU cores Mask R-CNN trains about 4x slower
     per iteration and would not learn the toy set within the 10-minute budget; pass
     --config configs/toy/toy_mask_rcnn_repghost_1_0x.py for bbox and mask mAP with more time;
  3. test the checkpoint twice with tools/test.py: training form (--no-fuse) and fused (RepFuseHook,
     which also checks the fused backbone against the training form on the first batch);
  4. write the fused checkpoint (tools/fuse_checkpoint.py) and test it with the deploy form of the
     config (backbone built with deploy=True);
  5. draw the fused model's predictions on a validation image into WORK_DIR/predictions.png.
Finally prints the mAP of the three tests side by side (mask mAP too for Mask R-CNN configs).
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run(cmd, log):
    start = time.time()
    print(f'$ {" ".join(cmd)}', flush=True)
    with open(log, 'w') as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f'command failed ({proc.returncode}); see {log}')
    print(f'  done in {time.time() - start:.0f} s (log: {log})', flush=True)


def draw_predictions(config, checkpoint, image, out):
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS
    from mmdet.utils import register_all_modules
    import mmcv

    import rep_backbones
    register_all_modules()
    model = init_detector(config, checkpoint, device='cpu')
    rep_backbones.fuse(model)      # no-op for a deploy config, shown for the general case
    result = inference_detector(model, image)
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    visualizer.add_datasample('predictions', mmcv.imconvert(mmcv.imread(image), 'bgr', 'rgb'), result,
                              draw_gt=False, pred_score_thr=0.3, out_file=out)
    return int((result.pred_instances.scores > 0.3).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='outputs/demo')
    parser.add_argument('--config', default='configs/toy/toy_retinanet_repghost_1_0x.py')
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--num-train', type=int, default=160)
    parser.add_argument('--num-val', type=int, default=40)
    parser.add_argument('--data-root', default='data/toy_coco', help='where the toy set is generated')
    args = parser.parse_args()
    work = os.path.join(ROOT, args.work_dir)
    os.makedirs(work, exist_ok=True)
    py = sys.executable
    start = time.time()

    from rep_backbones.toy_data import make_toy_coco
    paths = make_toy_coco(os.path.join(ROOT, args.data_root), num_train=args.num_train, num_val=args.num_val)
    print(f'toy COCO: {args.num_train} train / {args.num_val} val images under {paths["root"]}')

    root, val_ann = paths['root'], os.path.join(paths['root'], 'annotations', 'instances_val2017.json')
    data = ['--cfg-options'] + [f'{split}_dataloader.dataset.data_root={root}/' for split in ('train', 'val', 'test')] + [
        f'val_evaluator.ann_file={val_ann}', f'test_evaluator.ann_file={val_ann}']
    # no validation inside training: step 3 tests the final checkpoint anyway
    decay = [max(1, round(args.epochs * 0.75)), max(1, round(args.epochs * 0.9))]   # as 1x: [8, 11] of 12
    schedule = [f'param_scheduler.1.milestones={decay}', f'param_scheduler.1.end={args.epochs}',
                f'train_cfg.max_epochs={args.epochs}', f'train_cfg.val_interval={args.epochs + 1}',
                f'default_hooks.checkpoint.interval={args.epochs}']
    run([py, 'tools/train.py', args.config, '--work-dir', work, *data, *schedule], os.path.join(work, 'train.log'))
    ckpt = os.path.join(work, f'epoch_{args.epochs}.pth')

    results = {}
    for name, extra in [('training form', ['--no-fuse']), ('fused (RepFuseHook)', [])]:
        out = os.path.join(work, f'metrics_{len(results)}.json')
        run([py, 'tools/test.py', args.config, ckpt, '--work-dir', work, '--out-json', out, *extra, *data],
            os.path.join(work, f'test_{len(results)}.log'))
        results[name] = json.load(open(out))

    fused_ckpt = os.path.join(work, 'fused.pth')
    run([py, 'tools/fuse_checkpoint.py', args.config, ckpt, fused_ckpt], os.path.join(work, 'fuse.log'))
    deploy_cfg = os.path.join(work, 'deploy_config.py')
    with open(deploy_cfg, 'w') as f:
        f.write(f"_base_ = [{os.path.join(ROOT, args.config)!r}]\nmodel = dict(backbone=dict(deploy=True))\n")
    out = os.path.join(work, 'metrics_deploy.json')
    run([py, 'tools/test.py', deploy_cfg, fused_ckpt, '--work-dir', work, '--out-json', out, *data],
        os.path.join(work, 'test_deploy.log'))
    results['fused checkpoint, deploy=True'] = json.load(open(out))

    image = sorted(glob.glob(os.path.join(paths['val_img_dir'], '*.jpg')))[0]
    png = os.path.join(work, 'predictions.png')
    n = draw_predictions(deploy_cfg, fused_ckpt, image, png)

    keys = [('coco/bbox_mAP', 'bbox mAP'), ('coco/bbox_mAP_50', 'bbox mAP@50'),
            ('coco/segm_mAP', 'mask mAP'), ('coco/segm_mAP_50', 'mask mAP@50')]
    keys = [(k, label) for k, label in keys if k in results['training form']]
    print('\n| model | ' + ' | '.join(label for _, label in keys) + ' |')
    print('|---|' + '---|' * len(keys))
    for name, metrics in results.items():
        print(f'| {name} | ' + ' | '.join(f'{metrics[k]:.3f}' for k, _ in keys) + ' |')
    print(f'\nfused checkpoint: {fused_ckpt}\npredictions ({n} boxes with score > 0.3): {png}')
    print(f'total time: {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
