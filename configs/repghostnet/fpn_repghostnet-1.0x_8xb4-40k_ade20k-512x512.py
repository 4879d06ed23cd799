# Semantic FPN, ADE20K 512x512, 40k iterations at 8 GPUs x 4 images, RepGhostNet 1.0x, with the
# PoolFormer / RepViT Semantic FPN optimizer (AdamW lr 2e-4, weight decay 1e-4, poly) and a SyncBN
# backbone initialised from the official ImageNet weights (GitHub release 'RepGhost' of
# ChengpengChen/RepGhost). The official repository ships no segmentation code or numbers.
_base_ = ['../_base_/sem-fpn_ade20k-512x512.py', '../_base_/schedules/sem-fpn_adamw_40k.py']
model = dict(
    backbone=dict(
        type='RepGhostNet',
        arch='1.0x',   # out_indices 0..3 = blocks.2/4/6/8, the deepest block at each stride
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/ChengpengChen/RepGhost/releases/download/RepGhost/repghostnet_1_0x_142M_74.22.pth.tar')),
    neck=dict(in_channels=[24, 40, 112, 160]))
