# Mask R-CNN 1x COCO with RepMobile-S, official settings (zhanghao5201/RepMobile
# detection/configs/mask_rcnn_repmobile_small_fpn_1x_coco.py): SyncBN in the backbone and FPN,
# AdamW lr 2e-4 wd 0.05, 12 epochs (steps 8/11), 8 GPUs x 2 images.
# Paper: 37.3 APb / 35.0 APm.
# RepMobile-S backbone, ImageNet-pretrained: the official release file (DeiT-style {'model': ...}, classifier and
# distillation-head keys ignored and reported), loaded as released. Save it under the name below (see
# docs/families/repmobile.md, "Official weights"); a missing file stops the run with a message naming the path.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', './_base_/rep_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='RepMobile',
        arch='S',
        out_indices=(0, 1, 2, 3),   # strides 4/8/16/32: layer0..3
        frozen_stages=-1,
        norm_eval=False,            # upstream never freezes BN
        norm_cfg=dict(type='SyncBN'),   # as upstream; tools/train.py reverts to BN on CPU
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/RepMobile_S.pth')),
    neck=dict(in_channels=[64, 128, 256, 512], norm_cfg=dict(type='SyncBN', requires_grad=True)),
)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]
