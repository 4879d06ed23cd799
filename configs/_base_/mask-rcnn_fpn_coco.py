# Mask R-CNN + FPN on COCO 2017 instances (mmdet's Mask R-CNN R-50 1x config without its schedule and
# backbone): model, data (1333x800, flip 0.5, 2 images per GPU), runtime, and this package's hooks.
# A family config adds a schedule (schedules/*.py or mmdet's) and sets the backbone's type, arch,
# init_cfg and the FPN in_channels.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/default_runtime.py', './rep_runtime.py'
]
# Backbone settings shared by every family (see retinanet_fpn_coco.py).
model = dict(
    backbone=dict(_delete_=True, out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False,
                  norm_cfg=dict(type='SyncBN')))
