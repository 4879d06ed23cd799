# As retinanet_repghostnetv2-s_fpn_1x_coco.py, with RepGhostNetV2-M.
_base_ = './retinanet_repghostnetv2-s_fpn_1x_coco.py'
model = dict(
    backbone=dict(arch='M', init_cfg=dict(checkpoint='pretrained/repghostnetv2_m.pth')),
    neck=dict(in_channels=[48, 80, 160, 256]))
