# As retinanet_repnext-m3_fpn_1x_coco.py, with RepNeXt-M4.
_base_ = './retinanet_repnext-m3_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        arch='M4',
        init_cfg=dict(checkpoint='https://github.com/suous/RepNeXt/releases/download/v1.0/repnext_m4_distill_300e.pth')))
