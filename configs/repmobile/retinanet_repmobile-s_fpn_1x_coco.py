# RetinaNet 1x COCO, RepMobile-S. The official repository has no RetinaNet run: mmdet's RetinaNet
# recipe (SGD lr 0.01, 12 epochs, 8 GPUs x 2 images), as for the other families, with a SyncBN
# backbone as in the official detection code.
# Backbone init: the official ImageNet file, which has no download URL, at the path below (see
# README.md); a missing file stops the run with a message naming the path.
_base_ = ['../_base_/retinanet_fpn_coco.py', '../_base_/schedules/retinanet_sgd_1x.py']
model = dict(
    backbone=dict(
        type='RepMobile',
        arch='S',   # out_indices 0..3 = layer0..3
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/RepMobile_S.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
