# RetinaNet 1x COCO, RepNeXt-M3. The official repository has no RetinaNet run: mmdet's RetinaNet 1x
# (8 GPUs x 2 images) with the optimizer of the official RepNeXt Mask R-CNN runs (AdamW lr 2e-4,
# weight decay 0.05, warmup 500 iterations from 1e-6 x lr); SyncBN backbone.
# The backbone starts from the official ImageNet weights (GitHub release v1.0 of suous/RepNeXt,
# DeiT-style {'model': ...} training-form dict; the distillation head keys are reported as ignored).
_base_ = ['../_base_/retinanet_fpn_coco.py', '../_base_/schedules/adamw_1x.py']
model = dict(
    backbone=dict(
        type='RepNeXt',
        arch='M3',                  # out_indices 0..3 = stages.0..3
        drop_path_rate=0.0,         # official det/seg runs: no stochastic depth
        # Official: nothing frozen, BN statistics trained (its BN freeze was a no-op on SyncBN).
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/suous/RepNeXt/releases/download/v1.0/repnext_m3_distill_300e.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
