# As retinanet_repghostnetv2-s_fpn_1x_coco.py, with RepGhostNetV2-L.
_base_ = './retinanet_repghostnetv2-s_fpn_1x_coco.py'
model = dict(
    backbone=dict(arch='L', init_cfg=dict(checkpoint='pretrained/repghostnetv2_l.pth')),
    neck=dict(in_channels=[48, 96, 192, 512]))
