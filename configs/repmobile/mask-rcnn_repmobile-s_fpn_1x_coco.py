# Mask R-CNN 1x COCO, RepMobile-S: the official setting (zhanghao5201/RepMobile
# detection/configs/mask_rcnn_repmobile_small_fpn_1x_coco.py): SyncBN in the backbone and FPN, AdamW
# lr 2e-4, weight decay 0.05, 12 epochs (steps 8/11), warmup 500 iterations from 1e-6 x lr, 8 GPUs x 2 images.
# Paper (official run): 37.3 box AP / 35.0 mask AP.
# Backbone init: the official ImageNet file, which has no download URL, at the path below (see
# README.md); a missing file stops the run with a message naming the path.
_base_ = ['../_base_/mask-rcnn_fpn_coco.py', '../_base_/schedules/adamw_1x.py']
model = dict(
    backbone=dict(
        type='RepMobile',
        arch='S',   # out_indices 0..3 = layer0..3; the official code never freezes BN
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/RepMobile_S.pth')),
    neck=dict(in_channels=[64, 128, 256, 512], norm_cfg=dict(type='SyncBN', requires_grad=True)))
