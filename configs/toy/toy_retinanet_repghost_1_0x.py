# RetinaNet + RepGhostNet 1.0x (retinanet_repghost_1_0x.py) on the generated toy COCO set
# (configs/toy/_base_/toy_coco.py): the main job of tools/demo.py, sized to learn the set within
# minutes on a 2-core CPU (320 iterations of 8 images = 16 passes over the 160 training images).
# Changed from the full-size config, and why:
# * data: the toy set, 160x192 images, batch 8, seeded and deterministic (see the base);
# * from scratch: no ImageNet weights (not shipped), BN instead of SyncBN (CPU), 4 classes;
# * neck and head 128 channels wide, 2 stacked head convs instead of 256 / 4: at full width a training
#   iteration took 3.4x as long on CPU (2.19 vs 0.65 s of CPU time, batch 8), and the toy task does
#   not need it;
# * AdamW (lr 1e-3) with warm-up and cosine decay, by iteration (IterBasedTrainLoop: a killed run
#   resumed from its last checkpoint ends with the same weights), 8 validations on the way.
_base_ = ['../repghostnet/retinanet_repghostnet-1.0x_fpn_1x_coco.py', './_base_/toy_coco.py']

train_dataloader = _base_.toy_train_dataloader
val_dataloader = _base_.toy_val_dataloader
test_dataloader = val_dataloader
val_evaluator = _base_.toy_val_evaluator
test_evaluator = val_evaluator

model = dict(
    backbone=dict(init_cfg=None, norm_cfg=dict(type='BN')),
    neck=dict(out_channels=128),
    bbox_head=dict(num_classes=4, in_channels=128, feat_channels=128, stacked_convs=2))

max_iters = 320   # a 300-iteration run of this schedule had bbox mAP@50 0.97 on the toy val set at iteration 259
val_interval = max_iters // 8
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=0, end=max_iters),
]
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=10, norm_type=2))
auto_scale_lr = dict(enable=False)
default_hooks = dict(logger=dict(interval=10, log_metric_by_epoch=False),   # validation metrics by iteration
                     checkpoint=dict(by_epoch=False, interval=val_interval, max_keep_ckpts=2))
log_processor = dict(by_epoch=False, window_size=10)
