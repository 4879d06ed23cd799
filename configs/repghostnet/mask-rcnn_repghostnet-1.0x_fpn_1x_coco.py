# Mask R-CNN 1x COCO, RepGhostNet 1.0x: mmdet's Mask R-CNN recipe (SGD lr 0.02, 12 epochs, 8 GPUs x 2
# images) with a SyncBN backbone initialised from the official ImageNet weights (GitHub release
# 'RepGhost' of ChengpengChen/RepGhost: timm training dict, EMA weights loaded). The official
# repository ships no detection code or numbers; see README.md.
_base_ = ['../_base_/mask-rcnn_fpn_coco.py', 'mmdet::_base_/schedules/schedule_1x.py']
model = dict(
    backbone=dict(
        type='RepGhostNet',
        arch='1.0x',   # out_indices 0..3 = blocks.2/4/6/8, the deepest block at each stride
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/ChengpengChen/RepGhost/releases/download/RepGhost/repghostnet_1_0x_142M_74.22.pth.tar')),
    neck=dict(in_channels=[24, 40, 112, 160]))
