# Mask R-CNN 1x COCO, RepNeXt-M5: the official setting (detection/configs/mask_rcnn_repnext_m5_fpn_1x_coco.py):
# AdamW lr 2e-4, weight decay 0.1, 12 epochs, steps at 8 and 11, linear warmup 500 iterations from
# 1e-6 x lr; 1333x800, 2 images per GPU on 8 GPUs (batch 16). Official result: 44.7 / 40.7.
# RepNeXt-M5 backbone, ImageNet-pretrained (official release file repnext_m5_distill_300e.pth,
# DeiT-style {'model': ...} training-form dict, loaded as released; the distillation head keys are
# reported as ignored). Save it under the name below (see docs/families/repnext.md, "Official weights");
# a missing file stops the run with a message naming the path.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', './_base_/rep_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='RepNeXt',
        arch='M5',
        out_indices=(0, 1, 2, 3),   # strides 4/8/16/32: stages.0..3
        frozen_stages=-1,           # official: nothing frozen (ResNet's frozen_stages was swallowed)
        norm_eval=False,            # official: BN statistics train (its BN freeze was a no-op on SyncBN)
        drop_path_rate=0.0,         # official det/seg runs: no stochastic depth
        norm_cfg=dict(type='SyncBN'),   # the official setting; tools/train.py reverts to BN on CPU
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/repnext_m5_distill_300e.pth')),
    neck=dict(in_channels=[80, 160, 320, 640]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.1),  # the released M5 log trained with 0.1 (its config file says 0.05)
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]
