# Mask R-CNN 1x COCO, RepNeXt-M3: the official setting (suous/RepNeXt
# detection/configs/mask_rcnn_repnext_m3_fpn_1x_coco.py): AdamW lr 2e-4, weight decay 0.05, 12 epochs,
# steps 8/11, warmup 500 iterations from 1e-6 x lr; 1333x800, 8 GPUs x 2 images; SyncBN backbone.
# Paper (official run): 40.8 box AP / 37.8 mask AP.
# The backbone starts from the official ImageNet weights (GitHub release v1.0 of suous/RepNeXt,
# DeiT-style {'model': ...} training-form dict; the distillation head keys are reported as ignored).
_base_ = ['../_base_/mask-rcnn_fpn_coco.py', '../_base_/schedules/adamw_1x.py']
model = dict(
    backbone=dict(
        type='RepNeXt',
        arch='M3',                  # out_indices 0..3 = stages.0..3
        drop_path_rate=0.0,         # official det/seg runs: no stochastic depth
        # Official: nothing frozen, BN statistics trained (its BN freeze was a no-op on SyncBN).
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/suous/RepNeXt/releases/download/v1.0/repnext_m3_distill_300e.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
