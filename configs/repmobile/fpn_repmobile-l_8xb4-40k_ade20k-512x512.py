# Semantic FPN, ADE20K 512x512, 40k iterations at 8 GPUs x 4 images, RepMobile-L: the official setting
# (zhanghao5201/RepMobile segmentation/configs/sem_fpn/fpn_repmobile_large_ade20k_40k.py): AdamW lr 2e-4,
# weight decay 1e-4, gradient clipping max_norm 0.01 (L2), poly (power 0.9) to 1e-6; SyncBN backbone.
# Paper (official run): 42.2 mIoU.
# Backbone init: the official ImageNet file, which has no download URL, at the path below (see
# README.md); a missing file stops the run with a message naming the path.
_base_ = ['../_base_/sem-fpn_ade20k-512x512.py', '../_base_/schedules/sem-fpn_adamw_40k.py']
model = dict(
    backbone=dict(
        type='RepMobile',
        arch='L',   # out_indices 0..3 = layer0..3
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/RepMobile_L.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(clip_grad=dict(_delete_=True, max_norm=0.01, norm_type=2))
