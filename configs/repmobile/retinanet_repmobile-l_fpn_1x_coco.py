# As retinanet_repmobile-s_fpn_1x_coco.py, with RepMobile-L.
_base_ = './retinanet_repmobile-s_fpn_1x_coco.py'
model = dict(
    backbone=dict(arch='L', init_cfg=dict(checkpoint='pretrained/RepMobile_L.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
