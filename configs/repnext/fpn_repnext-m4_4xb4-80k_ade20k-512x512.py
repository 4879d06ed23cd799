# As fpn_repnext-m3_4xb4-80k_ade20k-512x512.py, with RepNeXt-M4 (the official M4 run; paper: 43.3 mIoU).
_base_ = './fpn_repnext-m3_4xb4-80k_ade20k-512x512.py'
model = dict(
    backbone=dict(
        arch='M4',
        init_cfg=dict(checkpoint='https://github.com/suous/RepNeXt/releases/download/v1.0/repnext_m4_distill_300e.pth')))
