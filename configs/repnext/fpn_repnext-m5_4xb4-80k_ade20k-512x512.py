# As fpn_repnext-m3_4xb4-80k_ade20k-512x512.py, with RepNeXt-M5 (the official M5 run; paper: 45.0 mIoU).
_base_ = './fpn_repnext-m3_4xb4-80k_ade20k-512x512.py'
model = dict(
    backbone=dict(
        arch='M5',
        init_cfg=dict(checkpoint='https://github.com/suous/RepNeXt/releases/download/v1.0/repnext_m5_distill_300e.pth')),
    neck=dict(in_channels=[80, 160, 320, 640]))
