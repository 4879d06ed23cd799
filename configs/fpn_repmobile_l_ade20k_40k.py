# Semantic FPN, ADE20K 512x512, 40k iterations, 8 GPUs x 4 images, RepMobile-L, official settings
# (zhanghao5201/RepMobile segmentation/configs/sem_fpn/fpn_repmobile_large_ade20k_40k.py): AdamW lr 2e-4,
# weight decay 1e-4, gradient clipping max_norm 0.01 (L2), poly 0.9 to 1e-6. Paper: 42.2 mIoU.
# RepMobile-L backbone, ImageNet-pretrained: the official release file (DeiT-style {'model': ...}, classifier and
# distillation-head keys ignored and reported), loaded as released. Save it under the name below (see
# docs/families/repmobile.md, "Official weights"); a missing file stops the run with a message naming the path.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_40k.py',
    './_base_/rep_runtime.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='RepMobile',
        arch='L',
        out_indices=(0, 1, 2, 3),   # strides 4/8/16/32: layer0..3
        frozen_stages=-1,
        norm_eval=False,
        norm_cfg=dict(type='SyncBN'),   # as upstream; tools/train.py reverts to BN on CPU
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/RepMobile_L.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=dict(max_norm=0.01, norm_type=2))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=1e-6, begin=0, end=40000, by_epoch=False)]
