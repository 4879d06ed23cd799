# As retinanet_repmobile-s_fpn_1x_coco.py, with RepMobile-M.
_base_ = './retinanet_repmobile-s_fpn_1x_coco.py'
model = dict(
    backbone=dict(arch='M', init_cfg=dict(checkpoint='pretrained/RepMobile_M.pth')),
    neck=dict(in_channels=[80, 160, 320, 640]))
