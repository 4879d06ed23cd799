# Semantic FPN, ADE20K 512x512, 40k iterations at 8 GPUs x 4 images, RepGhostNetV2-S, with the
# PoolFormer / RepViT Semantic FPN optimizer (AdamW lr 2e-4, weight decay 1e-4, poly) and a SyncBN
# backbone. No official segmentation run to compare with (see README.md).
# Backbone init: no official ImageNet weights exist; put a checkpoint at the path below (see
# README.md); a missing file stops the run with a message naming the path.
_base_ = ['../_base_/sem-fpn_ade20k-512x512.py', '../_base_/schedules/sem-fpn_adamw_40k.py']
model = dict(
    backbone=dict(
        type='RepGhostNetV2',
        arch='S',   # out_indices 0..3 = official layers[2, 4, 10, 16]
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/repghostnetv2_s.pth')),
    neck=dict(in_channels=[32, 64, 96, 128]))
