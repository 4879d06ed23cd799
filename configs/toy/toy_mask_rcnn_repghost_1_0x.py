# Mask R-CNN + RepGhostNet 1.0x (mask_rcnn_repghost_1_0x.py) on the generated toy COCO set
# (configs/toy/_base_/toy_coco.py): `python tools/demo.py --model mask_rcnn`. Changed from the
# full-size config as in toy_retinanet_repghost_1_0x.py: the toy data (seeded, deterministic), from
# scratch with BN and 4 classes, neck/RPN/RoI heads 128 channels wide (box head fc 512), AdamW with
# warm-up and cosine decay by iteration (IterBasedTrainLoop: exact resume), 8 validations on the way.
_base_ = ['../repghostnet/mask-rcnn_repghostnet-1.0x_fpn_1x_coco.py', './_base_/toy_coco.py']

train_dataloader = _base_.toy_train_dataloader
val_dataloader = _base_.toy_val_dataloader
test_dataloader = val_dataloader
val_evaluator = _base_.toy_val_evaluator
test_evaluator = val_evaluator

width = 128
model = dict(
    backbone=dict(init_cfg=None, norm_cfg=dict(type='BN')),
    neck=dict(out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=512, num_classes=4),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width, num_classes=4)))

max_iters = 320
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
