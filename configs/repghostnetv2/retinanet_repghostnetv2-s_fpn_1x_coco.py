# RetinaNet 1x COCO, RepGhostNetV2-S: mmdet's RetinaNet recipe (SGD lr 0.01, 12 epochs, 8 GPUs x 2
# images) with a SyncBN backbone. No official detection run to compare with (see README.md).
# Backbone init: no official ImageNet weights exist; put a checkpoint at the path below (see
# README.md); a missing file stops the run with a message naming the path.
_base_ = ['../_base_/retinanet_fpn_coco.py', '../_base_/schedules/retinanet_sgd_1x.py']
model = dict(
    backbone=dict(
        type='RepGhostNetV2',
        arch='S',   # out_indices 0..3 = official layers[2, 4, 10, 16]
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/repghostnetv2_s.pth')),
    neck=dict(in_channels=[32, 64, 96, 128]))
