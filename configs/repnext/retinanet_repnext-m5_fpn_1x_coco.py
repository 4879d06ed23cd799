# As retinanet_repnext-m3_fpn_1x_coco.py, with RepNeXt-M5.
_base_ = './retinanet_repnext-m3_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        arch='M5',
        init_cfg=dict(checkpoint='https://github.com/suous/RepNeXt/releases/download/v1.0/repnext_m5_distill_300e.pth')),
    neck=dict(in_channels=[80, 160, 320, 640]))
# The released M5 Mask R-CNN log trained with weight decay 0.1 (its config file says 0.05).
optim_wrapper = dict(optimizer=dict(weight_decay=0.1))
