# RetinaNet + FPN on COCO 2017 (mmdet's RetinaNet R-50 1x config without its schedule and backbone):
# model, data (1333x800, flip 0.5, 2 images per GPU), runtime, TTA, and this package's hooks.
# A family config adds a schedule (schedules/*.py or mmdet's) and sets the backbone's type, arch,
# init_cfg and the FPN in_channels.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/default_runtime.py', 'mmdet::retinanet/retinanet_tta.py', './rep_runtime.py'
]
# Backbone settings shared by every family: four maps at strides 4/8/16/32, nothing frozen, BN
# statistics trained, SyncBN (tools/train.py reverts it to BN on CPU).
model = dict(
    backbone=dict(_delete_=True, out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False,
                  norm_cfg=dict(type='SyncBN')))
